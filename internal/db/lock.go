package db

import "hash/fnv"

// LockKey is the PostgreSQL advisory-lock key of a name (FNV-1a, 64 bits): every user
// of a lock derives it from the same name.
func LockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64())
}
