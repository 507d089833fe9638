package edgepolicy

import (
	"net/netip"
	"sync"
	"time"
)

// ReportWindow is how often one client's refusals may be reported per service.
const ReportWindow = time.Minute

// MaxReportedClients bounds the clients reported individually per service and window; refusals
// of further clients are summed into the window's Summary. A flood from many addresses thus
// costs at most this many events a minute per service, plus one summary.
const MaxReportedClients = 64

// reporter remembers which clients were reported in the current window.
type reporter struct {
	mu       sync.Mutex
	start    int64 // unix nanoseconds the window started; 0 = none yet
	reported map[netip.Addr]struct{}
	// Refusals not reported individually in the current window, and from how many clients
	// beyond MaxReportedClients.
	suppressed, overflowClients uint64
	overflow                    map[netip.Addr]struct{} // bounded like reported
}

func (r *reporter) init() {
	r.reported = map[netip.Addr]struct{}{}
	r.overflow = map[netip.Addr]struct{}{}
}

// note records a refusal and reports whether it is the first of this client in the window
// (and the window still has room for one more client).
func (r *reporter) note(a netip.Addr, now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start == 0 {
		r.start = now
	}
	if _, ok := r.reported[a]; ok {
		r.suppressed++
		return false
	}
	if len(r.reported) >= MaxReportedClients {
		r.suppressed++
		if _, ok := r.overflow[a]; !ok {
			r.overflowClients++
			if len(r.overflow) < MaxReportedClients*16 {
				r.overflow[a] = struct{}{}
			}
		}
		return false
	}
	r.reported[a] = struct{}{}
	return true
}

// Summary is what a window refused beyond its individual reports.
type Summary struct {
	// Suppressed is the refusals not reported individually (repeats of reported clients and
	// every refusal of clients past MaxReportedClients).
	Suppressed uint64
	// MoreClients is how many clients past MaxReportedClients were refused (an estimate past
	// 16 × MaxReportedClients distinct addresses, which are counted once per refusal).
	MoreClients uint64
}

// Flush ends the window if it is ReportWindow old and returns its summary (ok false when the
// window is still open or nothing was refused). Call it every few seconds.
func (s *Service) Flush(now int64) (Summary, bool) {
	r := &s.reports
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.start == 0 || now-r.start < int64(ReportWindow) {
		return Summary{}, false
	}
	sum := Summary{Suppressed: r.suppressed, MoreClients: r.overflowClients}
	r.start, r.suppressed, r.overflowClients = 0, 0, 0
	clear(r.reported)
	clear(r.overflow)
	return sum, sum.Suppressed > 0
}
