// dockerfile-check parses a Dockerfile with BuildKit's own parser and runs
// BuildKit's Dockerfile linter over it: the same code path as
// `docker build --check`, without a Docker daemon or a registry. Base images
// are "resolved" by a stub that records each reference (after build-arg
// expansion) and answers with an empty linux/amd64 image config, so nothing
// leaves the machine.
//
//	dockerfile-check [--build-arg K=V]... Dockerfile
//
// It prints one JSON object: the lint warnings, the build error (if the file
// would not build), the base image references a build would pull, the build
// args declared before the first FROM, and each stage's instructions.
// tests/kube/build-tools.sh builds it; tests/deploy/test_images.py reads it.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

type offlineResolver struct {
	mu   sync.Mutex
	refs map[string]struct{}
}

func (r *offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	r.mu.Lock()
	r.refs[ref] = struct{}{}
	r.mu.Unlock()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},` +
		`"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}}`)
	return ref, digest.FromBytes(cfg), cfg, nil
}

type warning struct {
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
	Line   int    `json:"line"`
}

type instruction struct {
	Cmd      string            `json:"cmd"`
	Line     int               `json:"line"`
	Original string            `json:"original"`
	Args     []string          `json:"args"`
	Flags    []string          `json:"flags,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	User     string            `json:"user,omitempty"`
	ArgNames []string          `json:"arg_names,omitempty"`
}

type stage struct {
	Name         string        `json:"name"`
	Base         string        `json:"base"`
	Instructions []instruction `json:"instructions"`
}

type output struct {
	File       string            `json:"file"`
	Warnings   []warning         `json:"warnings"`
	Error      string            `json:"error,omitempty"`
	BaseImages []string          `json:"base_images"`
	MetaArgs   map[string]string `json:"meta_args"`
	Stages     []stage           `json:"stages"`
	SHA256     string            `json:"sha256"`
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "dockerfile-check: "+format+"\n", a...)
	os.Exit(2)
}

func main() {
	buildArgs := map[string]string{}
	var file string
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--build-arg" && i+1 < len(args):
			k, v, _ := strings.Cut(args[i+1], "=")
			buildArgs[k] = v
			i++
		case strings.HasPrefix(args[i], "-"):
			die("unknown flag %s", args[i])
		default:
			file = args[i]
		}
	}
	if file == "" {
		die("usage: dockerfile-check [--build-arg K=V]... Dockerfile")
	}
	dt, err := os.ReadFile(file)
	if err != nil {
		die("%v", err)
	}

	out := output{File: file, Warnings: []warning{}, BaseImages: []string{},
		MetaArgs: map[string]string{}, Stages: []stage{}}
	out.SHA256 = fmt.Sprintf("%x", sha256.Sum256(dt))

	// 1. The linter, through the converter a real build uses.
	ctx := context.Background()
	res := &offlineResolver{refs: map[string]struct{}{}}
	platform := ocispecs.Platform{OS: "linux", Architecture: "amd64"}
	src := llb.Scratch()
	def, err := src.Marshal(ctx)
	if err != nil {
		die("source: %v", err)
	}
	smap := llb.NewSourceMap(&src, file, "Dockerfile", dt)
	smap.Definition = def
	results, err := dockerfile2llb.DockerfileLint(ctx, dt, dockerfile2llb.ConvertOpt{
		Config:         dockerui.Config{BuildArgs: buildArgs},
		SourceMap:      smap,
		TargetPlatform: &platform,
		MetaResolver:   res,
	})
	if err != nil {
		die("lint: %v", err)
	}
	for _, w := range results.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		out.Warnings = append(out.Warnings, warning{Rule: w.RuleName, Detail: w.Detail, Line: line})
	}
	if results.Error != nil {
		out.Error = results.Error.Message
	}
	for ref := range res.refs {
		out.BaseImages = append(out.BaseImages, ref)
	}
	sort.Strings(out.BaseImages)

	// 2. The parsed structure, for assertions on what the image contains.
	ast, err := parser.Parse(strings.NewReader(string(dt)))
	if err != nil {
		die("parse: %v", err)
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, nil)
	if err != nil {
		die("instructions: %v", err)
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			v := ""
			if kv.Value != nil {
				v = *kv.Value
			}
			out.MetaArgs[kv.Key] = v
		}
	}
	// Walk the AST so each stage keeps every instruction in order.
	si := -1
	for _, n := range ast.AST.Children {
		cmd := strings.ToUpper(n.Value)
		if cmd == "FROM" {
			si++
			out.Stages = append(out.Stages, stage{Name: stages[si].Name, Base: stages[si].BaseName})
		}
		in := instruction{Cmd: cmd, Line: n.StartLine, Original: n.Original, Flags: n.Flags}
		for a := n.Next; a != nil; a = a.Next {
			in.Args = append(in.Args, a.Value)
		}
		parsed, perr := instructions.ParseInstruction(n)
		if perr == nil {
			switch c := parsed.(type) {
			case *instructions.EnvCommand:
				in.Env = map[string]string{}
				for _, kv := range c.Env {
					in.Env[kv.Key] = kv.Value
				}
			case *instructions.UserCommand:
				in.User = c.User
			case *instructions.ArgCommand:
				for _, kv := range c.Args {
					in.ArgNames = append(in.ArgNames, kv.Key)
				}
			}
		}
		if si >= 0 {
			out.Stages[si].Instructions = append(out.Stages[si].Instructions, in)
		}
	}

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		die("%v", err)
	}
}
