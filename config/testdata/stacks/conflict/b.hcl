stack "b" {
  service "redis.b" {
    protocol    = "tcp"
    listen_port = 6379
    timeout     = 10
  }
}
