package proxy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// classify keeps the server's explanation once, and the sentinel for errors.Is.
func TestClassifyStatesTheCauseOnce(t *testing.T) {
	cases := []struct {
		name string
		err  error
		is   error
		want string
	}{
		{"no replica", status.Error(codes.Unavailable, `no healthy replica of "echo.tcp": no instance is registered in Consul`),
			ErrNoReplica, `no healthy replica of "echo.tcp": no instance is registered in Consul`},
		{"unavailable without the name", status.Error(codes.Unavailable, "the server is shutting down"),
			ErrNoReplica, `no healthy replica for "echo.tcp": the server is shutting down`},
		{"unknown", status.Error(codes.NotFound, `service "echo.tcp" is not defined in any stack`),
			ErrUnknownService, `service "echo.tcp" is not defined in any stack`},
		{"not an entry point", status.Error(codes.FailedPrecondition, "no timeout"),
			ErrNotEntryPoint, `service is not an entry point for "echo.tcp": no timeout`},
		{"deadline", status.Error(codes.DeadlineExceeded, "slow"), context.DeadlineExceeded, `resolving "echo.tcp"`},
	}
	for _, tc := range cases {
		got := classify("echo.tcp", tc.err)
		if !errors.Is(got, tc.is) {
			t.Errorf("%s: %v is not %v", tc.name, got, tc.is)
		}
		if !strings.HasPrefix(got.Error(), tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got.Error(), tc.want)
		}
		if n := strings.Count(got.Error(), "no healthy replica"); n > 1 {
			t.Errorf("%s: cause printed %d times: %q", tc.name, n, got.Error())
		}
	}
}
