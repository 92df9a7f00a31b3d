package bench

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// Names of the reference operations.
const (
	OpX25519KeyGen   = "X25519 key generation"
	OpX25519Shared   = "X25519 shared secret"
	OpECDSASign      = "ECDSA P-256 sign"
	OpECDSAVerify    = "ECDSA P-256 verify"
	OpRSASign        = "RSA-2048 sign (PSS)"
	OpRSAVerify      = "RSA-2048 verify (PSS)"
	OpAESGCMRecord   = "AES-128-GCM seal, 64-byte record"
	OpAESGCMBulk     = "AES-128-GCM seal, 16 KiB record"
	aesGCMBulkSize   = 16 << 10
	aesGCMRecordSize = 64
)

// CryptoRef is the speed of one primitive on this CPU, measured with
// testing.Benchmark in this process.
type CryptoRef struct {
	Name    string  `json:"name"`
	NsPerOp float64 `json:"ns_per_op"`
	// MiBps is set for the bulk cipher: payload MiB per second on one core.
	MiBps float64 `json:"mib_per_s,omitempty"`
}

// Micros returns the cost of one operation in microseconds.
func (c CryptoRef) Micros() float64 { return c.NsPerOp / 1e3 }

// CryptoBenchmarks returns the reference operations as benchmark functions.
func CryptoBenchmarks() ([]string, map[string]func(*testing.B), error) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ECDSA key: %w", err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generating RSA key: %w", err)
	}
	digest := sha256.Sum256([]byte("tlsrelay-bench transcript hash"))
	ecSig, err := ecdsa.SignASN1(rand.Reader, ecKey, digest[:])
	if err != nil {
		return nil, nil, fmt.Errorf("ECDSA sign: %w", err)
	}
	pss := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	rsaSig, err := rsa.SignPSS(rand.Reader, rsaKey, crypto.SHA256, digest[:], pss)
	if err != nil {
		return nil, nil, fmt.Errorf("RSA sign: %w", err)
	}
	peer, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("X25519 key: %w", err)
	}
	block, err := aes.NewCipher(make([]byte, 16))
	if err != nil {
		return nil, nil, fmt.Errorf("AES key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, fmt.Errorf("GCM: %w", err)
	}
	seal := func(size int) func(*testing.B) {
		return func(b *testing.B) {
			nonce := make([]byte, aead.NonceSize())
			buf := make([]byte, size, size+aead.Overhead())
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				nonce[0] = byte(i)
				aead.Seal(buf[:0], nonce, buf, nil)
			}
		}
	}
	order := []string{OpX25519KeyGen, OpX25519Shared, OpECDSASign, OpECDSAVerify, OpRSASign, OpRSAVerify, OpAESGCMRecord, OpAESGCMBulk}
	fns := map[string]func(*testing.B){
		OpX25519KeyGen: func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := ecdh.X25519().GenerateKey(rand.Reader); err != nil {
					b.Fatal(err)
				}
			}
		},
		OpX25519Shared: func(b *testing.B) {
			k, _ := ecdh.X25519().GenerateKey(rand.Reader)
			for i := 0; i < b.N; i++ {
				if _, err := k.ECDH(peer.PublicKey()); err != nil {
					b.Fatal(err)
				}
			}
		},
		OpECDSASign: func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := ecdsa.SignASN1(rand.Reader, ecKey, digest[:]); err != nil {
					b.Fatal(err)
				}
			}
		},
		OpECDSAVerify: func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if !ecdsa.VerifyASN1(&ecKey.PublicKey, digest[:], ecSig) {
					b.Fatal("ECDSA verify failed")
				}
			}
		},
		OpRSASign: func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := rsa.SignPSS(rand.Reader, rsaKey, crypto.SHA256, digest[:], pss); err != nil {
					b.Fatal(err)
				}
			}
		},
		OpRSAVerify: func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := rsa.VerifyPSS(&rsaKey.PublicKey, crypto.SHA256, digest[:], rsaSig, pss); err != nil {
					b.Fatal(err)
				}
			}
		},
		OpAESGCMRecord: seal(aesGCMRecordSize),
		OpAESGCMBulk:   seal(aesGCMBulkSize),
	}
	return order, fns, nil
}

// MeasureCrypto runs every reference benchmark with testing.Benchmark (the
// benchmark time is the process's -test.benchtime, see testing.Init).
func MeasureCrypto(progress func(name string)) ([]CryptoRef, error) {
	order, fns, err := CryptoBenchmarks()
	if err != nil {
		return nil, err
	}
	var out []CryptoRef
	for _, name := range order {
		if progress != nil {
			progress(name)
		}
		r := testing.Benchmark(fns[name])
		if r.N == 0 {
			return nil, fmt.Errorf("benchmark %q failed", name)
		}
		ref := CryptoRef{Name: name, NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N)}
		if r.Bytes > 0 && r.T > 0 {
			ref.MiBps = float64(r.Bytes) * float64(r.N) / r.T.Seconds() / (1 << 20)
		}
		out = append(out, ref)
	}
	return out, nil
}

// Floor is the least crypto one handshake kind costs the proxy (the TLS
// client), computed from the reference speeds.
type Floor struct {
	// Micros counts every signature of the server's chain as checked on
	// each full handshake.
	Micros float64 `json:"us"`
	// Ops lists the operations counted in Micros.
	Ops string `json:"ops"`
	// CachedMicros is the floor of a proxy that checks the signatures of
	// a chain it has seen before only once (tlsrelay caches verified
	// chains): the handshake signature remains. It is the true lower
	// bound; it equals Micros for resumed handshakes.
	CachedMicros float64 `json:"cached_chain_us"`
}

// CryptoFloor returns the client side's minimum crypto work for kind, with
// the server chain of leaf + Intermediates under the root:
//
//   - full handshake (1.2 or 1.3, mutual): an X25519 key pair and shared
//     secret, one signature with the client key (CertificateVerify), and
//     2+Intermediates signature checks (the server's handshake signature,
//     the leaf's certificate, each intermediate's certificate), or only the
//     first of them when verified chains are cached (Floor.CachedMicros);
//   - TLS 1.3 resumed: the X25519 key pair and shared secret only (Go and
//     OpenSSL resume with psk_dhe_ke);
//   - TLS 1.2 resumed: symmetric crypto only, counted as four 64-byte
//     AES-128-GCM records (the two Finished messages and the first echo).
//
// Hashing, HKDF and the PRF are left out, so the floor is a lower bound.
func CryptoFloor(kind HandshakeKind, refs []CryptoRef) Floor {
	by := map[string]float64{}
	for _, r := range refs {
		by[r.Name] = r.Micros()
	}
	x := by[OpX25519KeyGen] + by[OpX25519Shared]
	if kind.Resumed {
		if kind.Version == tls.VersionTLS12 {
			f := 4 * by[OpAESGCMRecord]
			return Floor{Micros: f, CachedMicros: f, Ops: "symmetric only (4 small AES-GCM records)"}
		}
		return Floor{Micros: x, CachedMicros: x, Ops: "X25519 key pair + shared secret"}
	}
	verifies := 2 + Intermediates
	sign, verify, alg := by[OpECDSASign], by[OpECDSAVerify], "ECDSA"
	if kind.Key == pki.RSA2048 {
		sign, verify, alg = by[OpRSASign], by[OpRSAVerify], "RSA"
	}
	return Floor{
		Micros:       x + sign + float64(verifies)*verify,
		Ops:          fmt.Sprintf("X25519 pair + shared, 1 %s sign, %d %s verify", alg, verifies, alg),
		CachedMicros: x + sign + verify,
	}
}

// MicroResult is one in-process handshake benchmark.
type MicroResult struct {
	Name        string  `json:"name"`
	NsPerOp     float64 `json:"ns_per_op"`
	AllocsPerOp int64   `json:"allocs_per_op"`
	BytesPerOp  int64   `json:"bytes_per_op"`
}

// MeasureMicro runs HandshakeBenchmark for TLS 1.2 and 1.3, full and
// resumed, with ECDSA P-256 certificates, through testing.Benchmark.
func MeasureMicro(progress func(name string)) ([]MicroResult, error) {
	set, err := pki.NewSet(pki.ECDSAP256, Intermediates)
	if err != nil {
		return nil, fmt.Errorf("making certificates: %w", err)
	}
	var out []MicroResult
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for _, resumed := range []bool{false, true} {
			k := HandshakeKind{Version: v, Key: pki.ECDSAP256, Resumed: resumed}
			name := "BenchmarkHandshake" + strings.ReplaceAll(VersionName(v), ".", "")
			if resumed {
				name += "Resumed"
			} else {
				name += "Full"
			}
			if progress != nil {
				progress(k.String())
			}
			r := testing.Benchmark(HandshakeBenchmark(set, v, resumed))
			if r.N == 0 {
				return nil, fmt.Errorf("%s failed", name)
			}
			out = append(out, MicroResult{
				Name: name, NsPerOp: float64(r.T.Nanoseconds()) / float64(r.N),
				AllocsPerOp: r.AllocsPerOp(), BytesPerOp: r.AllocedBytesPerOp(),
			})
		}
	}
	return out, nil
}
