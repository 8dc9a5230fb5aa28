package main

// An s3mem backend whose objects are also files under a folder: a bucket is a sub-folder,
// an object a file at its key. The folder is read at start (load), and every change is
// written through before it is answered, so a restarted server (the demo's MinIO pod after
// a restart, its volume kept) serves what it held. Object metadata (Content-Type, user
// metadata) is not kept on disk; a key that can't be a file path is refused, not kept in
// memory only.

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rclone/gofakes3"
	"github.com/rclone/gofakes3/s3mem"
)

// tempPrefix names files being written; load skips them, and keys may not use it.
const tempPrefix = ".kdash-s3-tmp-"

type diskBackend struct {
	*s3mem.Backend
	root string
}

// objectPath is the file of bucket/key, or an error for a key that is no relative path.
func (d *diskBackend) objectPath(bucket, key string) (string, error) {
	refuse := gofakes3.ErrorMessagef(gofakes3.ErrInvalidArgument,
		"key %q can't be stored: this server keeps objects as files, so a key must be a "+
			"relative path without empty, '.' or '..' parts", key)
	if key == "" || strings.ContainsRune(key, 0) || strings.HasPrefix(key, "/") {
		return "", refuse
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." || strings.HasPrefix(part, tempPrefix) {
			return "", refuse
		}
	}
	// no symbolic link on the way (one put into the folder, the pod's volume, by hand):
	// a write or a delete through it would land outside the folder
	path := filepath.Join(d.root, bucket)
	for _, part := range append([]string{""}, strings.Split(key, "/")...) {
		path = filepath.Join(path, part)
		if info, err := os.Lstat(path); err == nil && info.Mode()&os.ModeSymlink != 0 {
			return "", gofakes3.ErrorMessagef(gofakes3.ErrInvalidArgument,
				"key %q can't be stored: %s on its way is a symbolic link", key,
				filepath.Base(path))
		}
	}
	return path, nil
}

func (d *diskBackend) CreateBucket(ctx context.Context, name string) error {
	if err := d.Backend.CreateBucket(ctx, name); err != nil {
		return err
	}
	return os.MkdirAll(filepath.Join(d.root, name), 0o700)
}

func (d *diskBackend) DeleteBucket(ctx context.Context, name string) error {
	if err := d.Backend.DeleteBucket(ctx, name); err != nil {
		return err
	}
	return os.RemoveAll(filepath.Join(d.root, name))
}

func (d *diskBackend) PutObject(ctx context.Context, bucket, key string, meta map[string]string,
	input io.Reader, size int64) (gofakes3.PutObjectResult, error) {
	path, err := d.objectPath(bucket, key)
	if err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	if ok, err := d.Backend.BucketExists(ctx, bucket); err != nil || !ok {
		return d.Backend.PutObject(ctx, bucket, key, meta, input, size) // its own error
	}
	data, err := io.ReadAll(input)
	if err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	if err := writeFile(path, data); err != nil {
		return gofakes3.PutObjectResult{}, gofakes3.ErrorMessagef(gofakes3.ErrInvalidArgument,
			"key %q can't be stored: %v", key, err)
	}
	return d.Backend.PutObject(ctx, bucket, key, meta, bytes.NewReader(data), int64(len(data)))
}

func (d *diskBackend) CopyObject(ctx context.Context, srcBucket, srcKey, dstBucket, dstKey string,
	meta map[string]string) (gofakes3.CopyObjectResult, error) {
	src, err := d.Backend.GetObject(ctx, srcBucket, srcKey, nil)
	if err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	defer src.Contents.Close()
	if _, err := d.PutObject(ctx, dstBucket, dstKey, meta, src.Contents, src.Size); err != nil {
		return gofakes3.CopyObjectResult{}, err
	}
	return gofakes3.CopyObjectResult{ETag: `"` + hex.EncodeToString(src.Hash) + `"`,
		LastModified: gofakes3.NewContentTime(time.Now())}, nil
}

func (d *diskBackend) DeleteObject(ctx context.Context, bucket, key string) (gofakes3.ObjectDeleteResult, error) {
	result, err := d.Backend.DeleteObject(ctx, bucket, key)
	if err == nil {
		d.removeFile(bucket, key)
	}
	return result, err
}

func (d *diskBackend) DeleteMulti(ctx context.Context, bucket string, keys ...string) (gofakes3.MultiDeleteResult, error) {
	result, err := d.Backend.DeleteMulti(ctx, bucket, keys...)
	for _, deleted := range result.Deleted {
		d.removeFile(bucket, deleted.Key)
	}
	return result, err
}

func (d *diskBackend) removeFile(bucket, key string) {
	path, err := d.objectPath(bucket, key)
	if err != nil {
		return
	}
	_ = os.Remove(path)
	top := filepath.Join(d.root, bucket)
	for dir := filepath.Dir(path); dir != top && strings.HasPrefix(dir, top); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil { // not empty: an ancestor of other objects
			return
		}
	}
}

// writeFile replaces path's contents at once (a temporary file renamed over it).
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), tempPrefix+"*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr == nil && cerr == nil {
		if err := os.Rename(tmp.Name(), path); err == nil {
			return nil
		} else {
			werr = err
		}
	}
	_ = os.Remove(tmp.Name())
	if werr != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), werr)
	}
	return cerr
}
