//go:build darwin || dragonfly || freebsd || linux || netbsd || openbsd

package fanout

import (
	"errors"
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on f for as long as it is open, or
// fails at once if another open file holds one. The kernel drops it when
// the process ends, however it ends.
func lockFile(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errors.New("in use: another FileJournal has it open")
		case !errors.Is(err, syscall.EINTR):
			return err
		}
	}
}
