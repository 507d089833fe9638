package main

import "context"

// rotated calls measure for every target in each of runs runs, rotating the order each run so
// that no target always runs first (or last) on a warming machine. It stops, with ctx's error,
// when ctx ends.
func rotated[T any](ctx context.Context, runs int, targets []T, measure func(run int, t T)) error {
	for run := range runs {
		for i := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			measure(run, targets[(i+run)%len(targets)])
		}
	}
	return nil
}
