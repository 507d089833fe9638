package load

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"time"

	"golang.org/x/net/ipv4"
)

// FloodResult is what a legitimate client with an established flow saw while a UDP flood from
// many new source addresses hit the same address.
type FloodResult struct {
	Sent, Lost int           // the client's queries, and those never answered
	P50, P99   time.Duration // the client's round trips
	Flooded    int           // flood datagrams sent
	Took       time.Duration // the flood's duration
}

// FloodSource is the i-th flood address: 127.a.b.1 with one source per /24 (a in 10..209, b in
// 0..249), clear of 127.0.0.0/24 (the client) and of 127.2.0.0/15 (IdleSessions).
func FloodSource(i int) net.IP {
	return net.IPv4(127, byte(10+i%200), byte(i/200%250), byte(1+i/50000%250))
}

// UDPFlood sends rounds 64-byte datagrams from each of sources loopback addresses (chosen per
// datagram with IP_PKTINFO through one socket) to addr, paced at rate datagrams a second, while
// a client that established its flow first sends a query, waits up to 200 ms for its answer and
// sends the next, every millisecond. An answer that arrives late still counts (as a slow one);
// the queries never answered, 3 s after the flood, are lost.
func UDPFlood(ctx context.Context, addr string, sources, rounds, rate int) (FloodResult, error) {
	dst, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		return FloodResult{}, err
	}
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, dst)
	if err != nil {
		return FloodResult{}, fmt.Errorf("flood client: %w", err)
	}
	defer c.Close()
	if err := establish(c); err != nil {
		return FloodResult{}, err
	}
	fc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return FloodResult{}, fmt.Errorf("flood socket: %w", err)
	}
	defer fc.Close()
	_ = fc.SetWriteBuffer(4 << 20)
	go func() { // replies to the flood's sources land here and are dropped
		buf := make([]byte, 2048)
		for {
			if _, _, err := fc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()

	stop := make(chan struct{})
	done := make(chan FloodResult, 1)
	go func() { done <- probeFlow(c, stop) }()
	time.Sleep(20 * time.Millisecond)
	pc := ipv4.NewPacketConn(fc)
	payload := make([]byte, 64)
	start := time.Now()
	flooded, total := 0, sources*rounds
	for n := 0; n < total && ctx.Err() == nil; n++ {
		if due := start.Add(time.Duration(n) * time.Second / time.Duration(rate)); time.Until(due) > time.Millisecond {
			time.Sleep(time.Until(due))
		}
		i := n % sources
		binary.BigEndian.PutUint32(payload, uint32(i))
		if _, err := pc.WriteTo(payload, &ipv4.ControlMessage{Src: FloodSource(i)}, dst); err == nil {
			flooded++
		}
	}
	took := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	r := <-done
	r.Flooded, r.Took = flooded, took
	return r, ctx.Err()
}

// establish makes the client's flow exist before the flood (a relay's session resolved).
func establish(c *net.UDPConn) error {
	buf := make([]byte, 2048)
	for range 20 {
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "hello" {
			return nil
		}
	}
	return fmt.Errorf("no echo from %s before the flood", c.RemoteAddr())
}

func probeFlow(c *net.UDPConn, stop <-chan struct{}) FloodResult {
	var r FloodResult
	var rtts []time.Duration
	msg, buf := make([]byte, 64), make([]byte, 2048)
	sentAt := map[uint32]time.Time{}
	read := func(until time.Time, want uint32) {
		for {
			_ = c.SetReadDeadline(until)
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if n < 4 {
				continue
			}
			seq := binary.BigEndian.Uint32(buf)
			if at, ok := sentAt[seq]; ok {
				rtts = append(rtts, time.Since(at))
				delete(sentAt, seq)
			}
			if seq == want {
				return
			}
		}
	}
	for seq := uint32(1); ; seq++ {
		select {
		case <-stop:
			read(time.Now().Add(3*time.Second), 0)
			r.Lost = len(sentAt)
			slices.Sort(rtts)
			r.P50, r.P99 = Quantile(rtts, 0.5), Quantile(rtts, 0.99)
			return r
		default:
		}
		binary.BigEndian.PutUint32(msg, seq)
		sentAt[seq] = time.Now()
		if _, err := c.Write(msg); err != nil {
			continue
		}
		r.Sent++
		read(time.Now().Add(200*time.Millisecond), seq)
		time.Sleep(time.Millisecond)
	}
}
