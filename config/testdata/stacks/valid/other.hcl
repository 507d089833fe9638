stack "other" {
  service "pg.other" {
    protocol    = "tcp"
    listen_port = 5432
    timeout     = 90
  }
  # The same number for udp is fine.
  service "syslog.other" {
    protocol    = "udp"
    listen_port = 5432
    timeout     = 60
  }
}
