package server

// definitionWantsACME reports whether a definition's policy asks for ACME. Definitions carry
// no policy until the policy path (Definition.Policy) lands; then this is d.Policy.ACME.
var definitionWantsACME = func(Definition) bool { return false }
