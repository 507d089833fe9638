# Demo stacks for `make dev` (network = "direct": upstreams are the replicas' own addresses).
stack "demo" {
  service "echo.tcp" {
    protocol    = "tcp"
    listen_port = 9000
    timeout     = "30s"
  }
  service "dns.udp" {
    protocol    = "udp"
    listen_port = 9053
    timeout     = "30s"
  }
  service "web.localhost" {
    timeout = "5m"
  }
}
