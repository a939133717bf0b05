package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/yannh/kubeconform/pkg/validator"
)

// kubernetesRelease is the Kubernetes release whose API schemas the manifests are checked
// against: its OpenAPI document (api/openapi-spec/swagger.json) comes in the module
// k8s.io/kubernetes, which the Go module proxy serves and the module cache keeps.
const kubernetesRelease = "v1.37.2"

// The manifests pass kubeconform in strict mode (an unknown field is an error), offline:
// the JSON schemas it reads are made here from Kubernetes' own OpenAPI document of
// kubernetesRelease, as kubernetes-json-schema's "standalone-strict" ones are (references
// inlined, no additional properties, int-or-string as either). kubeconform's default
// schemas are downloaded from GitHub, which this project's machines cannot reach.
func TestKubernetesManifestsPassKubeconform(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	kinds := map[string]bool{}
	resources := 0 // every document but the kustomization
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range regexp.MustCompile(`(?m)^kind: *(\w+)`).FindAllStringSubmatch(string(raw), -1) {
			kinds[m[1]] = true
			if m[1] != "Kustomization" {
				resources++
			}
		}
	}
	schemas := kubernetesSchemas(t, kinds)
	v, err := validator.New([]string{filepath.Join(schemas, "{{ .ResourceKind }}{{ .KindSuffix }}.json")},
		validator.Opts{Strict: true, SkipKinds: map[string]struct{}{"Kustomization": {}}})
	require.NoError(t, err)
	validate := func(name string, body string) []validator.Result {
		return v.Validate(name, io.NopCloser(strings.NewReader(body)))
	}

	checked := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, r := range validate(f, string(raw)) {
			switch r.Status {
			case validator.Valid:
				checked++
			case validator.Skipped, validator.Empty:
			default:
				sig, _ := r.Resource.Signature()
				t.Errorf("%s: %+v: %v %v", f, sig, r.Err, r.ValidationErrors)
			}
		}
	}
	assert.Equal(t, resources, checked, "every Deployment, Service, Job, ConfigMap and Secret was validated")

	// It would catch what a reviewer might miss.
	for name, doc := range map[string]string{
		"a misspelt field": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatas: {A: b}\n",
		"a wrong type":     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two, selector: {}, template: {}}\n",
		"a missing field":  "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{name: http}]}\n",
		"an unknown kind":  "apiVersion: v1\nkind: Servise\nmetadata: {name: x}\n",
	} {
		rs := validate(name, doc)
		require.Len(t, rs, 1, name)
		assert.NotEqual(t, validator.Valid, rs[0].Status, "%s passed", name)
	}
}

// kubernetesSchemas writes the standalone strict JSON schemas of kinds, from
// kubernetesRelease's OpenAPI document, into a directory, named as kubeconform looks them
// up ("deployment-apps-v1.json", "service-v1.json").
func kubernetesSchemas(t *testing.T, kinds map[string]bool) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+kubernetesRelease).Output()
	require.NoError(t, err, "the Go module proxy serves k8s.io/kubernetes (or the module cache has it)")
	var mod struct{ Dir string }
	require.NoError(t, json.Unmarshal(out, &mod))
	raw, err := os.ReadFile(filepath.Join(mod.Dir, "api", "openapi-spec", "swagger.json"))
	require.NoError(t, err)
	var spec struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	require.NoError(t, json.Unmarshal(raw, &spec))

	done := map[string]map[string]any{} // each definition inlined once, shared
	var inline func(s map[string]any, depth int) map[string]any
	inline = func(s map[string]any, depth int) map[string]any {
		require.Less(t, depth, 40, "a reference cycle")
		if ref, ok := s["$ref"].(string); ok {
			name := strings.TrimPrefix(ref, "#/definitions/")
			if d, ok := done[name]; ok {
				return d
			}
			d := inline(spec.Definitions[name], depth+1)
			done[name] = d
			return d
		}
		out := map[string]any{}
		for k, v := range s {
			switch k {
			case "properties":
				props := map[string]any{}
				for name, p := range v.(map[string]any) {
					props[name] = inline(p.(map[string]any), depth+1)
				}
				out[k] = props
			case "items", "additionalProperties":
				if m, ok := v.(map[string]any); ok {
					out[k] = inline(m, depth+1)
				} else {
					out[k] = v
				}
			case "description", "x-kubernetes-group-version-kind", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
				"x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy", "x-kubernetes-map-type", "x-kubernetes-unions":
			default:
				out[k] = v
			}
		}
		if out["format"] == "int-or-string" {
			delete(out, "type")
			delete(out, "format")
			out["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if _, has := out["properties"]; has {
			if _, open := out["additionalProperties"]; !open {
				out["additionalProperties"] = false
			}
		}
		return out
	}

	dir := t.TempDir()
	written := 0
	for _, def := range spec.Definitions {
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk := g.(map[string]any)
			group, version, kind := gvk["group"].(string), gvk["version"].(string), gvk["kind"].(string)
			if !kinds[kind] {
				continue
			}
			suffix := "-" + version
			if group != "" {
				suffix = "-" + strings.Split(group, ".")[0] + "-" + version
			}
			schema := inline(def, 0)
			body, err := json.Marshal(schema)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, strings.ToLower(kind)+suffix+".json"), body, 0o644))
			written++
		}
	}
	require.Positive(t, written)
	return dir
}
