// kstatus-check prints the health kstatus computes for Kubernetes objects, as Flux and the other
// GitOps tools built on sigs.k8s.io/cli-utils judge it.
//
// Input on stdin: one or more JSON objects, each a single object or a List (as `kubectl get -o
// json` prints; items without apiVersion/kind take them from the List's). Output: one JSON line
// per object, {"kind", "namespace", "name", "status", "message"}, with status from
// status.Compute. An object kstatus cannot compute is reported "Unknown" with the error as its
// message, as kstatus's own poller reports it.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type line struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus-check:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	dec.UseNumber()
	w := bufio.NewWriter(out)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for {
		var obj map[string]interface{}
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading a JSON object from stdin: %w", err)
		}
		for _, o := range flatten(obj) {
			if err := enc.Encode(check(o)); err != nil {
				return err
			}
		}
	}
}

// flatten returns the items of a List, or the object itself.
func flatten(obj map[string]interface{}) []map[string]interface{} {
	kind, _ := obj["kind"].(string)
	items, isList := obj["items"].([]interface{})
	if !isList || !strings.HasSuffix(kind, "List") {
		return []map[string]interface{}{obj}
	}
	apiVersion, _ := obj["apiVersion"].(string)
	itemKind := strings.TrimSuffix(kind, "List")
	out := make([]map[string]interface{}, 0, len(items))
	for _, it := range items {
		o, ok := it.(map[string]interface{})
		if !ok {
			continue
		}
		if _, ok := o["apiVersion"]; !ok && apiVersion != "" {
			o["apiVersion"] = apiVersion
		}
		if _, ok := o["kind"]; !ok && itemKind != "" {
			o["kind"] = itemKind
		}
		out = append(out, o)
	}
	return out
}

func check(obj map[string]interface{}) line {
	u := &unstructured.Unstructured{Object: normalize(obj).(map[string]interface{})}
	l := line{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
	res, err := status.Compute(u)
	if err != nil {
		l.Status, l.Message = string(status.UnknownStatus), err.Error()
		return l
	}
	l.Status, l.Message = string(res.Status), res.Message
	return l
}

// normalize turns json.Number into int64 or float64, the types unstructured's accessors expect
// (as the apimachinery JSON decoder produces them).
func normalize(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, x := range t {
			t[k] = normalize(x)
		}
		return t
	case []interface{}:
		for i, x := range t {
			t[i] = normalize(x)
		}
		return t
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		return f
	default:
		return v
	}
}
