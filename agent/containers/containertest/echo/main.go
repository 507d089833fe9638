// Command echo is the test image's only binary: a TCP echo server on :7000 (or $PORT).
package main

import (
	"io"
	"log"
	"net"
	"os"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "7000"
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
	}
}
