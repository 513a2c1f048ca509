# Certificates and kubeconfigs for the one-node cluster, made with openssl. Sourced.
# shellcheck shell=bash

# cert NAME CN ORG SANS: a key and a certificate signed by the cluster CA.
# SANS is an openssl subjectAltName value ("" for client-only certificates).
cert() {
  local name="$1" cn="$2" org="$3" sans="$4" ext="$PKI/$1.ext"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans";
    else echo "extendedKeyUsage=clientAuth"; fi
  } > "$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# kubeconfig NAME CERT: a kubeconfig for the client certificate CERT.
kubeconfig() {
  local file="$1" crt="$2" server="https://$(node_ip):6443"
  cat > "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: tenantdb-e2e
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $crt
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/$crt.crt")
    client-key-data: $(base64 -w0 < "$PKI/$crt.key")
contexts:
- name: tenantdb-e2e
  context: {cluster: tenantdb-e2e, user: $crt}
current-context: tenantdb-e2e
KC
  chmod 600 "$file"
}

make_pki() {
  local ip; ip="$(node_ip)"
  mkdir -p "$PKI"; chmod 700 "$PKI"
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=tenantdb-e2e-ca" -days 30 -sha256 -out "$PKI/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:$NODE_NAME,IP:127.0.0.1,IP:$ip,IP:$API_SERVICE_IP"
  cert kubelet-serving "$NODE_NAME" "" "DNS:$NODE_NAME,DNS:localhost,IP:$ip,IP:127.0.0.1"
  cert admin kubernetes-admin system:masters ""
  cert controller-manager system:kube-controller-manager "" ""
  cert scheduler system:kube-scheduler "" ""
  cert kube-proxy system:kube-proxy "" ""
  cert kubelet "system:node:$NODE_NAME" system:nodes ""
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig "$KCFG" admin
  for c in controller-manager scheduler kube-proxy kubelet; do kubeconfig "$STATE/$c.kubeconfig" "$c"; done
}
