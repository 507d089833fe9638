# An example workload exposed through nullnet: Redis, registered in Consul by Nomad.
#
# nullnet takes definitions (which services the proxies expose, on which port, with which idle
# timeout) only from stack files, so this job ships with its stack file, redis-demo.stack.hcl,
# to put in the servers' stacks_dir (or under the Consul KV prefix nullnet/stacks/ when the
# servers run as the nullnet-server job). Replicas, on the other hand, come from Consul: every
# healthy instance of the service named like the stack service, on a node that runs a nullnet
# agent, is a replica. So the Consul service block below is all the job needs.
#
# Walkthrough: website/docs/operations/nomad.md
job "redis-demo" {
  datacenters = ["dc1"]
  type        = "service"

  group "redis" {
    count = 1

    network {
      # The tunnel delivers to the host's bridge address, so the port is a host port on all
      # addresses.
      port "redis" {
        static = 6379
      }
    }

    service {
      # Must equal the stack service name in redis-demo.stack.hcl.
      name         = "redis-demo"
      port         = "redis"
      provider     = "consul"
      address_mode = "host"
      tags         = ["nullnet-replica"]

      # Informational: shown in the Consul UI beside the stack's own entry.
      meta {
        nullnet-stack = "demo"
      }

      # "The port is listening" is the health check nullnet relies on: only passing
      # instances are replicas.
      check {
        name     = "redis port"
        type     = "tcp"
        port     = "redis"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "redis" {
      driver = "docker"

      config {
        image = "redis:7"
        ports = ["redis"]
        args  = ["--protected-mode", "no"]
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
