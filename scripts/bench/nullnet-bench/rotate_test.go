package main

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

func TestRotated(t *testing.T) {
	var got []string
	err := rotated(context.Background(), 3, []string{"a", "b", "c"}, func(run int, s string) {
		got = append(got, s)
	})
	if want := []string{"a", "b", "c", "b", "c", "a", "c", "a", "b"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("rotated = %v, %v; want %v, nil", got, err, want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err = rotated(ctx, 3, []int{1, 2}, func(int, int) { n++; cancel() })
	if !errors.Is(err, context.Canceled) || n != 1 {
		t.Fatalf("after cancel: %d measured, err %v; want 1, context.Canceled", n, err)
	}
}
