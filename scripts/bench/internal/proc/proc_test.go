package proc

import (
	"os"
	"testing"
	"time"
)

func TestStatFields(t *testing.T) {
	// A command name with spaces and a parenthesis must not shift the fields.
	line := "1234 (nginx: worker (x)) S 1 1200 1200 0 -1 4194560 10 0 0 0 250 75 0 0 20 0 1 0 100 0 0"
	got, err := statFields(line)
	if err != nil {
		t.Fatal(err)
	}
	if got.pgrp != 1200 || got.utime != 250 || got.stime != 75 {
		t.Errorf("statFields = %+v", got)
	}
	if _, err := statFields("garbage"); err == nil {
		t.Error("want an error for a malformed line")
	}
}

func TestGroupUsageOfChild(t *testing.T) {
	p, err := Start("sleep", t.TempDir(), nil, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := GroupUsage(p.Pid())
		if err == nil && u.RSSBytes > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usage for the child's group: %v %+v", err, u)
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.Stop(time.Second)
	if exited, _ := p.Exited(); !exited {
		t.Error("Stop returned before the process ended")
	}
	if _, err := GroupUsage(os.Getpid() + 1<<22); err == nil {
		t.Error("want an error for an empty group")
	}
}
