package client

import (
	"testing"

	"github.com/nullnet/nullnet/agent/containers"
	"github.com/nullnet/nullnet/config"
)

// Container replicas are matched to their node by the same meta keys as host services.
func TestContainerMetaMatchesHostServices(t *testing.T) {
	if containers.MetaNode != MetaNode || containers.MetaStack != MetaStack || containers.MetaProtocol != MetaProtocol {
		t.Fatal("agent/containers meta keys drifted from host services'")
	}
	cfg := &config.Config{Client: config.Client{Containers: []config.ContainerReplica{{Name: "redis-1", Service: "redis.internal", Port: 6379, Protocol: "tcp"}}}}
	got := namedContainers(cfg)
	if got["redis-1"] != (containers.Spec{Service: "redis.internal", Port: 6379, Protocol: "tcp"}) || !containerReplicasWanted(cfg) {
		t.Fatalf("namedContainers = %+v", got)
	}
}
