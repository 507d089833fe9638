package config

// ValidServiceName reports whether name is acceptable as a stack service name (a DNS name of at
// most 253 characters), the same rule stack files are held to; RPC validation uses it too.
func ValidServiceName(name string) bool { return len(name) <= 253 && nameRE.MatchString(name) }
