package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"github.com/vigil-dev/vigil/tools/fleet"
)

// ChildEnv marks a process started by the bench to serve the fleet. A binary
// embedding the bench calls RunChildIfAsked first thing in main (and tests in
// TestMain), so the bench can start the fleet by re-executing itself.
const ChildEnv = "VIGIL_BENCH_FLEET_CHILD"

// RunChildIfAsked runs the fleet and exits if this process is a fleet child.
func RunChildIfAsked() {
	if os.Getenv(ChildEnv) != "1" {
		return
	}
	os.Exit(fleet.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// fleetHandle is the running fleet: in a child process (pid set) or in this
// one.
type fleetHandle struct {
	info  fleet.Info
	pid   int // 0 when in-process
	inner *fleet.Fleet
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
}

// startFleet starts the fleet of cfg. In child mode it re-executes exe (this
// binary by default) with ChildEnv set; the child exits when its standard
// input closes, when maxDur has passed, or when it is told to stop.
func startFleet(cfg fleet.Config, child bool, exe string, maxDur time.Duration, stderr io.Writer) (*fleetHandle, error) {
	if !child {
		f, err := fleet.Start(cfg)
		if err != nil {
			return nil, err
		}
		return &fleetHandle{info: f.Info(), inner: f}, nil
	}
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find own executable for the fleet child: %w", err)
		}
	}
	cj, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "--config-json", string(cj), "--exit-on-eof", "--max-duration", maxDur.String())
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start fleet child: %w", err)
	}
	h := &fleetHandle{pid: cmd.Process.Pid, cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	line := make(chan []byte, 1)
	go func() {
		r := bufio.NewReaderSize(stdout, 1<<20)
		b, _ := r.ReadBytes('\n')
		line <- b
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() { h.done <- cmd.Wait() }()
	select {
	case b := <-line:
		if err := json.Unmarshal(b, &h.info); err != nil {
			h.stop()
			return nil, fmt.Errorf("fleet child (pid %d) did not report its info: %w (%q)", h.pid, err, truncate(string(b), 200))
		}
	case err := <-h.done:
		return nil, fmt.Errorf("fleet child exited at start: %v", err)
	case <-time.After(2 * time.Minute):
		h.stop()
		return nil, errors.New("fleet child did not start within 2m")
	}
	return h, nil
}

// cpu returns the fleet child's CPU time; 0 when in-process.
func (h *fleetHandle) cpu() time.Duration {
	if h.pid == 0 {
		return 0
	}
	d, _ := procCPU(h.pid)
	return d
}

// mem returns the child's RSS and peak RSS; zeros when in-process.
func (h *fleetHandle) mem() (int64, int64) {
	if h.pid == 0 {
		return 0, 0
	}
	rss, hwm, _ := procMem(h.pid)
	return rss, hwm
}

// stop ends the fleet and waits for it.
func (h *fleetHandle) stop() {
	if h.inner != nil {
		h.inner.Close()
		return
	}
	_ = h.stdin.Close()
	select {
	case <-h.done:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-h.done
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
