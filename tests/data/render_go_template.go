// Renders an Ollama TEMPLATE with Go's own text/template, as Ollama does: reads
// {"template": ..., "conversations": [[{"role", "content"}, ...], ...]} on stdin and writes the
// rendered prompts as a JSON list on stdout.
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

// The fields of Ollama's template values that edgelmm's TEMPLATE reads.
type Values struct {
	Messages []Message
}

func main() {
	var in struct {
		Template      string
		Conversations [][]Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	tmpl := template.Must(template.New("ollama").Parse(in.Template))
	out := []string{}
	for _, messages := range in.Conversations {
		var b strings.Builder
		if err := tmpl.Execute(&b, Values{Messages: messages}); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}
