package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/chatbotsaas/chatbotd/internal/config"
)

// The Kubernetes manifests (cmd/chatbotd/k8s), checked offline: every document decodes
// strictly into Kubernetes' own API types (an unknown or misspelt field, a wrong type,
// fails), and what they say agrees with this binary: the roles and commands it runs
// exist, the probes name routes it serves on the port it listens on, and every variable
// the ConfigMap and the Secret set is one the configuration reads.
func TestKubernetesManifestsAgreeWithTheBinary(t *testing.T) {
	const dir = "k8s"
	var kust struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
		Images     []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.UnmarshalStrict(raw, &kust, yaml.DisallowUnknownFields), "kustomization.yaml")
	known := knownVariables(t)
	files := append(slices.Clone(kust.Resources), "secret.example.yaml")
	var deployments []appsv1.Deployment
	var jobs []batchv1.Job
	for _, f := range files {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err, "kustomization.yaml names %s", f)
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			var meta struct {
				Kind string `json:"kind"`
			}
			require.NoError(t, yaml.Unmarshal([]byte(doc), &meta))
			strict := func(v any) {
				require.NoError(t, yaml.UnmarshalStrict([]byte(doc), v, yaml.DisallowUnknownFields), "%s: %s", f, meta.Kind)
			}
			switch meta.Kind {
			case "Deployment":
				var d appsv1.Deployment
				strict(&d)
				deployments = append(deployments, d)
			case "Job":
				var j batchv1.Job
				strict(&j)
				jobs = append(jobs, j)
			case "Service":
				var s corev1.Service
				strict(&s)
			case "ConfigMap":
				var c corev1.ConfigMap
				strict(&c)
				for k := range c.Data {
					assert.Contains(t, known, k, "%s sets %s, which chatbotd does not read", f, k)
				}
			case "Secret":
				var s corev1.Secret
				strict(&s)
				for k := range s.StringData {
					assert.Contains(t, known, k, "%s sets %s, which chatbotd does not read", f, k)
				}
			default:
				t.Fatalf("%s: a %q the test does not check", f, meta.Kind)
			}
		}
	}
	roles := map[string]bool{}
	for _, d := range deployments {
		spec := d.Spec.Template.Spec
		require.Len(t, spec.Containers, 1, d.Name)
		c := spec.Containers[0]
		assert.Equal(t, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels, "%s selects its own pods", d.Name)
		require.Len(t, c.Args, 3, d.Name)
		assert.Equal(t, []string{"serve", "--roles"}, c.Args[:2], d.Name)
		_, err := parseRoles(c.Args[2])
		require.NoError(t, err, d.Name)
		roles[c.Args[2]] = true
		assert.NotEmpty(t, c.Resources.Requests, "%s requests resources", d.Name)
		assert.NotEmpty(t, c.EnvFrom, "%s reads the configuration", d.Name)
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if p == nil {
				continue
			}
			require.NotNil(t, p.HTTPGet, d.Name)
			assert.Contains(t, []string{"/health", "/ready"}, p.HTTPGet.Path, d.Name)
			assert.Equal(t, "http", p.HTTPGet.Port.String(), d.Name)
			assert.Equal(t, "api", c.Args[2], "only the api role serves HTTP")
		}
		if c.Args[2] == "api" {
			require.NotNil(t, c.ReadinessProbe, "the api is probed")
			require.NotNil(t, c.LivenessProbe, "the api is probed")
			assert.Equal(t, int32(8080), c.Ports[0].ContainerPort, "HTTP_ADDR of config.yaml")
		}
		if c.Args[2] == "relay" {
			assert.GreaterOrEqual(t, *d.Spec.Replicas, int32(2), "a relay stands by")
		}
	}
	assert.Equal(t, map[string]bool{"api": true, "relay": true, "projectors": true}, roles, "every role is deployed")
	require.Len(t, jobs, 1)
	assert.Equal(t, []string{"migrate"}, jobs[0].Spec.Template.Spec.Containers[0].Args)
}

// knownVariables are the environment variables the configuration reads.
func knownVariables(t *testing.T) []string {
	t.Helper()
	var out []string
	var walk func(reflect.Type)
	walk = func(ty reflect.Type) {
		for f := range ty.Fields() {
			if name, ok := f.Tag.Lookup("env"); ok {
				out = append(out, strings.Split(name, ",")[0])
			} else if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeFor[config.Config]())
	require.NotEmpty(t, out)
	return out
}

func stripComments(doc string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
