stack "a" {
  service "redis.a" {
    protocol    = "tcp"
    listen_port = 6379
    timeout     = 10
  }
}
