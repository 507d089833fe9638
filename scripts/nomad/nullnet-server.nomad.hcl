# nullnet servers (the control plane) as a Nomad service job.
#
# Servers need no capabilities: they talk to Consul and serve gRPC and HTTP. Stack files come
# from Consul KV (one key per stack under nullnet/stacks/) rendered into the stacks directory;
# the server watches that directory, so a KV edit is applied without a restart, and a stack set
# with errors is rejected while the running one stays (see the config_reload_rejected event).
# One server is elected leader through a Consul lock and mirrors stacks into the catalog.
#
# Walkthrough: website/docs/operations/nomad.md
job "nullnet-server" {
  datacenters = ["dc1"]
  type        = "service"

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "server" {
    count = 3

    # Spread servers over hosts: they share one port pair and must not share a fate.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    network {
      mode = "host"
      port "grpc" {
        static = 4701
      }
      port "http" {
        static = 4700
      }
    }

    update {
      max_parallel     = 1
      min_healthy_time = "10s"
      healthy_deadline = "3m"
    }

    task "nullnet" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/nullnet"
        args    = ["agent", "-config-file=${NOMAD_TASK_DIR}/server.hcl"]
      }

      template {
        destination   = "local/server.hcl"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          node_name      = "{{ env "node.unique.name" }}-server"
          datacenter     = "{{ env "NOMAD_DC" }}"
          advertise_addr = "{{ env "attr.unique.network.ip-address" }}"
          log_level      = "{{ key_or_default "nullnet/config/log_level" "info" }}"
          log_json       = true

          ports {
            http = {{ env "NOMAD_PORT_http" }}
            grpc = {{ env "NOMAD_PORT_grpc" }}
          }

          consul {
            address = "127.0.0.1:8500"
          }

          server {
            enabled    = true
            stacks_dir = "{{ env "NOMAD_TASK_DIR" }}/stacks"
            network    = "{{ key_or_default "nullnet/config/network" "vxlan" }}"
          }
        EOT
      }

      # Every stack under nullnet/stacks/ in one file; the server's file watcher picks up
      # changes, so the template does not signal the task.
      template {
        destination = "local/stacks/stacks.hcl"
        change_mode = "noop"
        data        = <<-EOT
          {{ range ls "nullnet/stacks" }}
          # nullnet/stacks/{{ .Key }}
          {{ .Value }}
          {{ end }}
        EOT
      }

      env {
        CONSUL_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/consul-token"
      }

      # The agent registers itself in Consul as service "nullnet" (tag "server", with a health
      # check on /v1/agent/health): that is how clients and proxies find it. A Nomad service
      # block would register a second, redundant instance, so there is none.

      kill_signal  = "SIGTERM"
      kill_timeout = "10s"

      resources {
        cpu    = 300
        memory = 256
      }
    }
  }
}
