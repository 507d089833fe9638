# The demo stacks of `nullnet agent -dev` (embedded in the binary). network = "direct": the
# upstreams are the replicas' own addresses. The agent serves a replica of each service itself
# (a TCP echo, a UDP echo and an HTTP page on 127.0.0.1), registered in Consul as host services.
stack "demo" {
  service "echo.tcp" {
    protocol    = "tcp"
    listen_port = 9000
    timeout     = "30s"
  }
  service "echo.udp" {
    protocol    = "udp"
    listen_port = 9053
    timeout     = "30s"
  }
  service "web.localhost" {
    timeout = "5m"
  }
}
