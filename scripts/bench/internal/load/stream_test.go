package load

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestStreamIntoSink(t *testing.T) {
	hello, err := ClientHello("bench-passthrough")
	if err != nil {
		t.Fatal(err)
	}
	if len(hello) < 100 || hello[0] != 0x16 {
		t.Fatalf("ClientHello %x", hello)
	}
	sink, err := StartTCPSink("127.0.0.1:0", hello)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	bps, err := Stream(context.Background(), sink.Addr(), hello, 2, time.Second, sink)
	if err != nil || bps <= 0 {
		t.Fatalf("Stream = %g, %v", bps, err)
	}
	// A path that garbles the ClientHello fails the measurement.
	bad := append([]byte{}, hello...)
	bad[len(bad)-1] ^= 1
	if _, err := Stream(context.Background(), sink.Addr(), bad, 1, time.Second, sink); err == nil || !strings.Contains(err.Error(), "did not start with the ClientHello") {
		t.Fatalf("garbled prefix: %v", err)
	}
	if _, err := Stream(context.Background(), "127.0.0.1:1", hello, 1, time.Second, sink); err == nil {
		t.Fatal("no error for a closed port")
	}
}
