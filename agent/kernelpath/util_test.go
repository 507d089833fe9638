package kernelpath

import (
	"crypto/rand"
	"encoding/hex"
)

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
