package ctrlplane

import "testing"

func TestParse(t *testing.T) {
	cases := []struct {
		name string
		out  string
		want []Figure
	}{
		{
			name: "json contract wins over text",
			out:  "edits: 100\n{\"figures\":[{\"name\":\"p99\",\"unit\":\"ms\",\"value\":41.5,\"limit\":500}]}\n",
			want: []Figure{{Name: "p99", Unit: "ms", Value: 41.5, Limit: 500}},
		},
		{
			name: "text lines",
			out:  "propagation over 100 edits\np50: 12.5 ms\np99 = 40 ms\nnot a figure\n",
			want: []Figure{{Name: "p50", Title: "p50", Unit: "ms", Value: 12.5}, {Name: "p99", Title: "p99", Unit: "ms", Value: 40}},
		},
		{
			name: "go durations on one line",
			out:  "propagation, 100 edits:\n  p50 12ms  p99 1.25s  max 1.5s  (target p99 < 500ms)\n",
			want: []Figure{{Name: "p50", Title: "p50", Unit: "ms", Value: 12}, {Name: "p99", Title: "p99", Unit: "ms", Value: 1250}, {Name: "max", Title: "max", Unit: "ms", Value: 1500}},
		},
		{name: "nothing", out: "hello\n", want: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Parse([]byte(c.out)).Figures
			if len(got) != len(c.want) {
				t.Fatalf("got %+v, want %+v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Errorf("figure %d = %+v, want %+v", i, got[i], c.want[i])
				}
			}
		})
	}
}

func TestParseGoBench(t *testing.T) {
	out := "goos: linux\nBenchmarkSetupTeardown-2   \t     500\t   3123456 ns/op\t         2.91 setup-p50-ms\t  7.50 teardown-p99-ms\t 62.3 tunnels/s\nPASS\n"
	got := ParseGoBench([]byte(out)).Figures
	want := []Figure{
		{Name: "BenchmarkSetupTeardown setup-p50-ms", Title: "setup p50", Unit: "ms", Value: 2.91},
		{Name: "BenchmarkSetupTeardown teardown-p99-ms", Title: "teardown p99", Unit: "ms", Value: 7.5},
		{Name: "BenchmarkSetupTeardown tunnels/s", Title: "tunnels/s", Unit: "tunnels/s", Value: 62.3, Higher: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("figure %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
