// Package pki makes throw-away X.509 hierarchies for tests, the demo and the
// benchmarks: a self-signed root, any number of intermediates, server and
// client leaves with ECDSA P-256, RSA or Ed25519 keys, and PEM files on disk.
//
// Nothing here is meant for production certificates: serial numbers are
// random, lifetimes are short by default and keys are never encrypted unless
// asked for.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// KeyType names the public-key algorithm of a generated certificate.
type KeyType int

// Key types. The zero value is ECDSA P-256, the cheapest to handshake with.
const (
	ECDSAP256 KeyType = iota
	RSA2048
	Ed25519
	ECDSAP384
)

// String returns a short name of the key type, as used in benchmark rows.
func (k KeyType) String() string {
	switch k {
	case ECDSAP256:
		return "ecdsa-p256"
	case RSA2048:
		return "rsa-2048"
	case Ed25519:
		return "ed25519"
	case ECDSAP384:
		return "ecdsa-p384"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// Cert is a certificate with its private key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	DER  []byte
}

// CertPEM returns the certificate in PEM form.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
}

// KeyPEM returns the private key as an unencrypted PKCS#8 PEM block.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		// Only keys this package generated get here, and all of them marshal.
		panic(fmt.Sprintf("pki: marshalling key: %v", err))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Options shape a generated certificate. The zero value gives an ECDSA P-256
// key valid from an hour ago for 24 hours.
type Options struct {
	Key       KeyType
	NotBefore time.Time // zero: an hour ago
	NotAfter  time.Time // zero: NotBefore + 25h
	DNSNames  []string
	IPs       []net.IP
	// URIs are URI SANs (SPIFFE IDs).
	URIs []*url.URL
	// Usage is x509.ExtKeyUsageServerAuth, ClientAuth or both; a leaf with
	// nil gets both, with an empty (non-nil) slice none (no extension).
	Usage []x509.ExtKeyUsage
}

func newKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	default:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(fmt.Sprintf("pki: reading random serial: %v", err))
	}
	return n
}

func create(tmpl *x509.Certificate, parent *Cert, o Options) (*Cert, error) {
	key, err := newKey(o.Key)
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", o.Key, err)
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = o.NotBefore
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	tmpl.NotAfter = o.NotAfter
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = tmpl.NotBefore.Add(25 * time.Hour)
	}
	signerCert, signerKey := tmpl, key
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return &Cert{Cert: c, Key: key, DER: der}, nil
}

// NewRoot makes a self-signed CA certificate.
func NewRoot(cn string, o Options) (*Cert, error) {
	return create(&x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"tlsrelay test"}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil, o)
}

// NewIntermediate makes a CA certificate signed by parent.
func NewIntermediate(cn string, parent *Cert, o Options) (*Cert, error) {
	return create(&x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"tlsrelay test"}},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, parent, o)
}

// NewLeaf makes an end-entity certificate signed by parent.
func NewLeaf(cn string, parent *Cert, o Options) (*Cert, error) {
	usage := o.Usage
	if usage == nil {
		usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	ku := x509.KeyUsageDigitalSignature
	if o.Key == RSA2048 {
		ku |= x509.KeyUsageKeyEncipherment
	}
	return create(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"tlsrelay test"}},
		KeyUsage:    ku,
		ExtKeyUsage: usage,
		DNSNames:    o.DNSNames,
		IPAddresses: o.IPs,
		URIs:        o.URIs,
	}, parent, o)
}

// Chain is a leaf with the intermediates that lead to Root, leaf first.
type Chain struct {
	Root          *Cert
	Intermediates []*Cert // Intermediates[0] signed the leaf
	Leaf          *Cert
}

// TLSCertificate returns the leaf with its intermediates, ready for a
// tls.Config.
func (ch *Chain) TLSCertificate() tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{ch.Leaf.DER}, PrivateKey: ch.Leaf.Key, Leaf: ch.Leaf.Cert}
	for _, ic := range ch.Intermediates {
		tc.Certificate = append(tc.Certificate, ic.DER)
	}
	return tc
}

// ChainPEM returns leaf and intermediates as one PEM file, leaf first, the
// layout proxy_ssl_certificate expects.
func (ch *Chain) ChainPEM() []byte {
	out := ch.Leaf.CertPEM()
	for _, ic := range ch.Intermediates {
		out = append(out, ic.CertPEM()...)
	}
	return out
}

// NewChain makes a leaf under root through n fresh intermediates.
func NewChain(root *Cert, n int, cn string, o Options) (*Chain, error) {
	ch := &Chain{Root: root}
	parent := root
	var ints []*Cert
	for i := n; i >= 1; i-- {
		ic, err := NewIntermediate(fmt.Sprintf("%s int%d", cn, i), parent, Options{Key: o.Key})
		if err != nil {
			return nil, err
		}
		ints = append(ints, ic)
		parent = ic
	}
	leaf, err := NewLeaf(cn, parent, o)
	if err != nil {
		return nil, err
	}
	// ints were made from the root down; a chain lists them from the leaf up.
	for i := len(ints) - 1; i >= 0; i-- {
		ch.Intermediates = append(ch.Intermediates, ints[i])
	}
	ch.Leaf = leaf
	return ch, nil
}

// Pool returns a CertPool holding the given certificates.
func Pool(certs ...*Cert) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Cert)
	}
	return p
}

// Set is a ready-made PKI for a proxy test: one root; a server chain per
// upstream (DNS name "localhost" and IP 127.0.0.1 and ::1) and a client
// chain for the proxy, each with the given number of intermediates.
type Set struct {
	Root   *Cert
	Server *Chain
	Client *Chain
}

// NewSet makes a Set with key type k and n intermediates under each leaf.
func NewSet(k KeyType, n int) (*Set, error) {
	root, err := NewRoot("tlsrelay test root", Options{Key: k})
	if err != nil {
		return nil, err
	}
	srv, err := NewChain(root, n, "localhost", Options{
		Key: k, DNSNames: []string{"localhost"},
		IPs:   []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, err
	}
	cli, err := NewChain(root, n, "tlsrelay client", Options{
		Key: k, Usage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, err
	}
	return &Set{Root: root, Server: srv, Client: cli}, nil
}

// Files are the paths WriteFiles wrote.
type Files struct {
	CA         string // root certificate (the trusted file)
	ServerCert string // server leaf + intermediates
	ServerKey  string
	ClientCert string // client leaf + intermediates
	ClientKey  string
}

// FilesIn returns the paths WriteFiles writes in dir.
func FilesIn(dir string) Files {
	return Files{
		CA:         filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client.key"),
	}
}

// ServerConfig reads the files back as Set.ServerConfig's configuration:
// for an upstream in another process than the one that made the set.
func (f Files) ServerConfig() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.ServerCert, f.ServerKey)
	if err != nil {
		return nil, fmt.Errorf("loading the server certificate: %w", err)
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("reading the CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("reading the CA: no certificate in %s", f.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots}, nil
}

// WriteFiles writes the set as PEM files into dir, which must exist.
func (s *Set) WriteFiles(dir string) (Files, error) {
	f := FilesIn(dir)
	for _, w := range []struct {
		path string
		data []byte
	}{
		{f.CA, s.Root.CertPEM()},
		{f.ServerCert, s.Server.ChainPEM()},
		{f.ServerKey, s.Server.Leaf.KeyPEM()},
		{f.ClientCert, s.Client.ChainPEM()},
		{f.ClientKey, s.Client.Leaf.KeyPEM()},
	} {
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			return Files{}, fmt.Errorf("writing %s: %w", w.path, err)
		}
	}
	return f, nil
}

// ServerConfig returns a TLS server config that presents the set's server
// chain and requires a client certificate issued under the set's root.
func (s *Set) ServerConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{s.Server.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    Pool(s.Root),
	}
}
