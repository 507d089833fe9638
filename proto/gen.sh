#!/usr/bin/env bash
# Regenerates the Go code for proto/nullnet.proto with pinned generators (protoc from Debian's
# protobuf-compiler; the Go plugins at the versions below, built into bin/).
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
mkdir -p bin/tools
GOBIN=$PWD/bin/tools go install "$PROTOC_GEN_GO"
GOBIN=$PWD/bin/tools go install "$PROTOC_GEN_GO_GRPC"
PATH=$PWD/bin/tools:$PATH protoc -I proto \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  proto/nullnet.proto
