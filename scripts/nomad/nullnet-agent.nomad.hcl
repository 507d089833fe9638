# nullnet client/proxy agent on every Nomad client node (a system job).
#
# The agent builds VXLAN devices with netlink and binds the proxies' ports, so it runs with
# raw_exec (as the Nomad client's user, root) from a binary installed on the host, e.g. with
# `make release` copied to /usr/local/bin/nullnet. Its configuration is rendered by a template
# block from Consul: the node's identity from Nomad, the log level from Consul KV, and the proxy
# role only on nodes whose Nomad client meta sets nullnet_proxy = "true". Servers are discovered
# by the agent itself through Consul (service "nullnet", tag "server").
#
# Walkthrough: website/docs/operations/nomad.md
job "nullnet-agent" {
  datacenters = ["dc1"]
  type        = "system"
  priority    = 90

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  update {
    # One node at a time: a proxy being replaced drops its listeners for a moment.
    max_parallel = 1
    stagger      = "30s"
  }

  group "agent" {
    # The agent uses the host's network: its HTTP API, the proxy's listeners and the tunnels
    # live in the host's namespace.
    network {
      mode = "host"
      port "http" {
        static = 4700
      }
    }

    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "nullnet" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/nullnet"
        args    = ["agent", "-config-file=${NOMAD_TASK_DIR}/agent.hcl"]
      }

      template {
        destination = "local/agent.hcl"
        # The agent reloads on SIGHUP; a configuration with errors is rejected and the running
        # one kept, so a bad KV edit cannot take a node down.
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          node_name      = "{{ env "node.unique.name" }}"
          datacenter     = "{{ env "NOMAD_DC" }}"
          advertise_addr = "{{ env "attr.unique.network.ip-address" }}"
          log_level      = "{{ key_or_default "nullnet/config/log_level" "info" }}"
          log_json       = true

          consul {
            address = "127.0.0.1:8500"
          }

          client {
            enabled = true
          }
          {{ if eq (env "meta.nullnet_proxy") "true" }}
          proxy {
            enabled   = true
            http_addr = ":80"
          }
          {{ end }}
        EOT
      }

      # A Consul token for the agent (policy: scripts/consul/acl-agent.hcl), from Nomad's
      # workload identity or a variable; kept out of the rendered file.
      env {
        CONSUL_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/consul-token"
      }

      # SIGTERM stops the agent gracefully (listeners closed, Consul deregistration) in 2 s.
      kill_signal  = "SIGTERM"
      kill_timeout = "10s"

      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
