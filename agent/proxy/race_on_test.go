//go:build race

package proxy

// raceEnabled: the race detector slows everything several times; load tests scale down.
const raceEnabled = true
