package servicepolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nullnet/nullnet/config"
)

const (
	// KVPrefix is the Consul KV prefix the stack mirror owns for policies: one key per
	// definition, KVPrefix + "<stack>/<service>". The leader needs key_prefix write on it,
	// every server read.
	KVPrefix = "nullnet/policies/"
	// MetaDigest is the definition's service-meta key naming the digest (Digest) of the JSON
	// stored at its key. Absent = the service has no policy.
	MetaDigest = "nullnet-policy"
	// MaxValueSize bounds what a reader decodes: Consul's own KV limit is 512 KiB.
	MaxValueSize = 512 << 10
)

// Key is the KV key of a definition's policy.
func Key(stack, service string) string { return KVPrefix + stack + "/" + service }

// Encode is the stored form of a policy and its digest; a zero policy has none (nil, "").
func Encode(p config.ServicePolicy) ([]byte, string) {
	if p.IsZero() {
		return nil, ""
	}
	// A struct of plain fields always marshals, and always to the same bytes.
	b, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("servicepolicy: marshal: %v", err))
	}
	return b, Digest(b)
}

// Digest identifies a stored value: the first 16 bytes of its SHA-256, in hex.
func Digest(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:16])
}

// ErrTooLarge is returned by Decode for values past MaxValueSize.
var ErrTooLarge = errors.New("policy document too large")

// Decode reads a stored policy. Unknown fields are ignored, so that a newer leader's document
// still reads here (its new settings unknown to this version).
func Decode(value []byte) (config.ServicePolicy, error) {
	var p config.ServicePolicy
	if len(value) > MaxValueSize {
		return p, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(value), MaxValueSize)
	}
	if err := json.Unmarshal(value, &p); err != nil {
		return config.ServicePolicy{}, fmt.Errorf("invalid policy JSON: %w", err)
	}
	// An empty list means what an absent one means; one form for both keeps comparisons true.
	if len(p.Allow) == 0 {
		p.Allow = nil
	}
	if len(p.Deny) == 0 {
		p.Deny = nil
	}
	if len(p.Routes) == 0 {
		p.Routes = nil
	}
	// A burst without a rate is no limit (Rate.IsZero), and Encode leaves such a rate out:
	// drop its burst here too, so a document decodes to what it re-encodes to.
	if p.NewConnectionsPerClient.IsZero() {
		p.NewConnectionsPerClient = config.Rate{}
	}
	return p, nil
}
