stack "my-app" {
  service "redis.internal" {
    protocol    = "tcp"
    listen_port = 6379
    timeout     = 0 # never idles out
  }
  service "dns.internal" {
    protocol    = "udp"
    listen_port = 53
    timeout     = "30s"
  }
  service "color.com" {
    timeout = "5m"
  }
  service "fs.color.com" {}
}
