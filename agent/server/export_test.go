package server

import "time"

// SetCertSendTimeout shortens the WatchCertificates send bound for tests.
func SetCertSendTimeout(s *Server, d time.Duration) { s.certSendTimeout = d }
