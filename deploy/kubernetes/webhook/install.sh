#!/usr/bin/env bash
# Installs the admission webhook (README: "Kubernetes"): a CA and a serving
# certificate for mmtier-webhook.mmtier-system.svc made with openssl, the
# Secret mmtier-webhook-tls holding it, and this directory's objects with
# the CA in the MutatingWebhookConfiguration's caBundle.
#
#     deploy/kubernetes/webhook/install.sh              # kubectl apply
#     deploy/kubernetes/webhook/install.sh --render DIR # write DIR/webhook.yaml instead
#
# --render applies nothing: the file holds the private key, keep it as a
# secret.  Run it again to renew the certificate (ten years; it restarts the
# webhook's pods, which read it when they start; after --render, restart
# them yourself once applied).  Then label the namespaces whose pods it should
# see: kubectl label namespace NAME mmtier.io/injection=enabled
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
render=""
if [[ ${1:-} == --render ]]; then
  [[ -n ${2:-} ]] || { echo "usage: $0 [--render DIR]" >&2; exit 2; }
  render=$2
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--render DIR]" >&2
  exit 2
fi
for tool in openssl kubectl python3; do
  command -v "$tool" > /dev/null || { echo "install.sh: $tool is needed" >&2; exit 1; }
done
python3 -c 'import yaml' 2> /dev/null || { echo "install.sh: python3's yaml module is needed (python3-yaml)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
svc=mmtier-webhook.mmtier-system.svc
(
  cd "$work"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=mmtier-webhook-ca" \
    -keyout ca.key -out ca.crt 2> /dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$svc" -keyout tls.key -out tls.csr 2> /dev/null
  printf 'subjectAltName=DNS:%s,DNS:mmtier-webhook.mmtier-system,DNS:mmtier-webhook\n' "$svc" > san.ext
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile san.ext \
    -out tls.crt 2> /dev/null
)
kubectl kustomize "$HERE" > "$work/objects.yaml"
python3 - "$work" > "$work/webhook.yaml" << 'PY'
import base64, sys, yaml
work = sys.argv[1]
b64 = lambda name: base64.b64encode(open("%s/%s" % (work, name), "rb").read()).decode()
docs = [d for d in yaml.safe_load_all(open(work + "/objects.yaml")) if d]
for d in docs:
    if d["kind"] == "MutatingWebhookConfiguration":
        for w in d["webhooks"]:
            w["clientConfig"]["caBundle"] = b64("ca.crt")
secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
          "metadata": {"name": "mmtier-webhook-tls", "namespace": "mmtier-system"},
          "data": {"tls.crt": b64("tls.crt"), "tls.key": b64("tls.key")}}
sys.stdout.write(yaml.safe_dump_all([secret] + docs, sort_keys=False))
PY
if [[ -n $render ]]; then
  mkdir -p "$render"
  install -m 0600 "$work/webhook.yaml" "$render/webhook.yaml"
  echo "install.sh: wrote $render/webhook.yaml (it holds the private key)"
else
  kubectl apply -f "$work/webhook.yaml"
  # The pods read the certificate when they start; the caBundle just
  # changed to the new CA.
  kubectl -n mmtier-system rollout restart deploy/mmtier-webhook
  kubectl -n mmtier-system rollout status deploy/mmtier-webhook
fi
