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
	out := "goos: linux\nBenchmarkSetupTeardown-2   \t     500\t   3123456 ns/op\t         2.91 setup-p50-ms\t  7.50 setup-p99-ms\nPASS\n"
	got := ParseGoBench([]byte(out)).Figures
	want := map[string]float64{"BenchmarkSetupTeardown ns/op": 3123456, "BenchmarkSetupTeardown setup-p50-ms": 2.91, "BenchmarkSetupTeardown setup-p99-ms": 7.5}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for _, f := range got {
		if want[f.Name] != f.Value {
			t.Errorf("%s = %v, want %v", f.Name, f.Value, want[f.Name])
		}
	}
}
