package bench

import (
	"bufio"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// MeasureOpenSSL runs `openssl speed` for the primitives the handshakes use
// (RSA-2048, ECDSA P-256, X25519), one second each, and returns them as
// reference operations named like MeasureCrypto's. OpenSSL times only the
// X25519 derivation; key generation is counted at the same cost.
func MeasureOpenSSL(path string) ([]CryptoRef, error) {
	out, err := exec.Command(path, "speed", "-seconds", "1", "rsa2048", "ecdsap256", "ecdhx25519").Output()
	if err != nil {
		return nil, fmt.Errorf("running %s speed: %w", path, err)
	}
	return parseOpenSSLSpeed(string(out))
}

// parseOpenSSLSpeed reads the summary lines of `openssl speed`:
//
//	rsa 2048 bits 0.001112s 0.000033s    898.9  30390.9
//	 256 bits ecdsa (nistp256)   0.0000s   0.0001s  25783.8   8736.4
//	 253 bits ecdh (X25519)   0.0001s  17244.4
//
// using the per-second rates, which keep their precision.
func parseOpenSSLSpeed(out string) ([]CryptoRef, error) {
	perSec := func(s string) (float64, error) {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 {
			return 0, fmt.Errorf("parsing openssl speed rate %q", s)
		}
		return 1e9 / v, nil
	}
	var refs []CryptoRef
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "rsa 2048 bits") && len(f) >= 7:
			s, err1 := perSec(f[5])
			v, err2 := perSec(f[6])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("openssl speed line %q", line)
			}
			refs = append(refs, CryptoRef{Name: OpRSASign, NsPerOp: s}, CryptoRef{Name: OpRSAVerify, NsPerOp: v})
		case strings.Contains(line, "ecdsa (nistp256)") && len(f) >= 8:
			s, err1 := perSec(f[6])
			v, err2 := perSec(f[7])
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("openssl speed line %q", line)
			}
			refs = append(refs, CryptoRef{Name: OpECDSASign, NsPerOp: s}, CryptoRef{Name: OpECDSAVerify, NsPerOp: v})
		case strings.Contains(line, "ecdh (X25519)") && len(f) >= 6:
			d, err := perSec(f[5])
			if err != nil {
				return nil, fmt.Errorf("openssl speed line %q", line)
			}
			refs = append(refs, CryptoRef{Name: OpX25519KeyGen, NsPerOp: d}, CryptoRef{Name: OpX25519Shared, NsPerOp: d})
		}
	}
	if len(refs) != 6 {
		return nil, fmt.Errorf("openssl speed: found %d of 6 rates in its output", len(refs))
	}
	return refs, nil
}
