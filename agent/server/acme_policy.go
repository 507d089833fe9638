package server

// definitionWantsACME reports whether a definition's policy asks for ACME (a variable so the
// pure selection can be tested without building policies).
var definitionWantsACME = func(d Definition) bool { return d.Policy.ACME }
