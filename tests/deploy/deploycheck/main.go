// Command deploycheck checks the deploy files that no other offline tool here can check,
// with the parsers that Docker itself uses:
//
//	deploycheck dockerfile FILE   parse FILE with BuildKit's Dockerfile frontend and its linter;
//	                              prints the stages as JSON ({"stages": [{"name", "base"}], "warnings": [...]})
//	deploycheck compose FILE      load FILE with compose-go (the Compose specification's JSON schema,
//	                              interpolation from the environment, normalisation); prints the project as JSON
//
// Built by scripts/install-deploy-tools.sh into .tools/bin; used by tests/deploy.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: deploycheck dockerfile|compose FILE")
		os.Exit(2)
	}
	var out any
	var err error
	switch os.Args[1] {
	case "dockerfile":
		out, err = checkDockerfile(os.Args[2])
	case "compose":
		out, err = checkCompose(os.Args[2])
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", " ")
	if err := encoder.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
}

type stage struct {
	Name string `json:"name"`
	Base string `json:"base"`
}

type dockerfileReport struct {
	Stages   []stage  `json:"stages"`
	MetaArgs []string `json:"meta_args"`
	Warnings []string `json:"warnings"`
}

func checkDockerfile(path string) (*dockerfileReport, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	result, err := parser.Parse(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	report := &dockerfileReport{Stages: []stage{}, MetaArgs: []string{}, Warnings: []string{}}
	for _, warning := range result.Warnings {
		report.Warnings = append(report.Warnings, fmt.Sprintf("line %d: %s", warning.Location.Start.Line, warning.Short))
	}
	lint := linter.New(&linter.Config{
		Warn: func(rule, description, url, message string, location []parser.Range) {
			line := 0
			if len(location) > 0 {
				line = location[0].Start.Line
			}
			report.Warnings = append(report.Warnings, fmt.Sprintf("line %d: %s: %s", line, rule, message))
		},
	})
	stages, metaArgs, err := instructions.Parse(result.AST, lint)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, s := range stages {
		report.Stages = append(report.Stages, stage{Name: s.Name, Base: s.BaseName})
	}
	for _, arg := range metaArgs {
		for _, kv := range arg.Args {
			report.MetaArgs = append(report.MetaArgs, kv.Key)
		}
	}
	return report, nil
}

func checkCompose(path string) (any, error) {
	options, err := cli.NewProjectOptions([]string{path}, cli.WithOsEnv, cli.WithName("deploycheck"))
	if err != nil {
		return nil, err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return project, nil
}
