// Command kdash-s3 is the S3 server of kdash-hub's tests and demo: rclone's gofakes3 with
// AWS Signature V4 checked on every request (header or presigned), objects kept in memory
// and, with -data DIR, as files under DIR too (disk.go), so a restart keeps them.
//
// The credentials come from the environment (KDASH_S3_ACCESS_KEY, KDASH_S3_SECRET_KEY) so
// they never show in a process list; the server refuses to start without them, and refuses
// any address that is not given explicitly. Once it listens it prints one line,
// "kdash-s3 listening on ADDR", so a starter knows it is ready. MinIO's unauthenticated
// health paths (/minio/health/live, /minio/health/ready) answer 200, so the probes of a
// MinIO manifest work when this server stands in for it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
)

type bucketList []string

func (b *bucketList) String() string     { return strings.Join(*b, ",") }
func (b *bucketList) Set(v string) error { *b = append(*b, v); return nil }

func main() {
	listen := flag.String("listen", "", "address to listen on, e.g. 127.0.0.1:9000 (required)")
	seed := flag.String("seed", "", "folder whose sub-folders become buckets, their files objects")
	data := flag.String("data", "", "folder that keeps the objects as files (bucket = sub-folder), "+
		"read at start and written through on every change; default: memory only")
	var buckets bucketList
	flag.Var(&buckets, "bucket", "a bucket to create at start (repeatable)")
	flag.Parse()
	if err := run(*listen, *seed, *data, buckets); err != nil {
		fmt.Fprintln(os.Stderr, "kdash-s3:", err)
		os.Exit(1)
	}
}

func run(listen, seed, data string, buckets []string) error {
	if listen == "" {
		return errors.New("-listen ADDR is required")
	}
	access, secret := os.Getenv("KDASH_S3_ACCESS_KEY"), os.Getenv("KDASH_S3_SECRET_KEY")
	if access == "" || secret == "" {
		return errors.New("KDASH_S3_ACCESS_KEY and KDASH_S3_SECRET_KEY must be set: " +
			"this server never serves without signature checks")
	}
	memory := s3mem.New()
	var backend gofakes3.Backend = memory
	ctx := context.Background()
	if data != "" {
		if err := os.MkdirAll(data, 0o700); err != nil {
			return err
		}
		if err := load(ctx, memory, data); err != nil {
			return fmt.Errorf("data %s: %w", data, err)
		}
		backend = &diskBackend{Backend: memory, root: data}
	}
	for _, name := range buckets {
		if err := backend.CreateBucket(ctx, name); err != nil && !gofakes3.IsAlreadyExists(err) {
			return fmt.Errorf("bucket %q: %w", name, err)
		}
	}
	if seed != "" {
		if err := load(ctx, backend, seed); err != nil {
			return fmt.Errorf("seed %s: %w", seed, err)
		}
	}
	faker := gofakes3.New(backend,
		gofakes3.WithV4Auth(map[string]string{access: secret}),
		gofakes3.WithLogger(gofakes3.StdLog(log.New(os.Stderr, "", log.LstdFlags), gofakes3.LogErr)))
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: withHealth(faker.Server()), ReadHeaderTimeout: 30 * time.Second}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	fmt.Printf("kdash-s3 listening on %s\n", ln.Addr())
	if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// withHealth answers MinIO's health probes, and hands every other request to next.
func withHealth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			(r.URL.Path == "/minio/health/live" || r.URL.Path == "/minio/health/ready") {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// load makes a bucket of each sub-folder of root and an object of each file below it.
func load(ctx context.Context, backend gofakes3.Backend, root string) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, entry := range entries {
		if !entry.IsDir() {
			continue
		}
		bucket := entry.Name()
		if err := backend.CreateBucket(ctx, bucket); err != nil && !gofakes3.IsAlreadyExists(err) {
			return fmt.Errorf("bucket %q: %w", bucket, err)
		}
		top := filepath.Join(root, bucket)
		err := filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(top, path)
			_, err = backend.PutObject(ctx, bucket, filepath.ToSlash(rel), map[string]string{},
				bytes.NewReader(data), int64(len(data)))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}
