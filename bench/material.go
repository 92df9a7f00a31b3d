package bench

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

// Intermediates is how many intermediate CAs sit under the root in every
// chain the harness makes; proxy_ssl_verify_depth 2 allows exactly this.
const Intermediates = 1

// Material is one PKI written to disk, shared by the proxies (client
// certificate, trusted root) and the backends (server chain).
type Material struct {
	Key   pki.KeyType
	Set   *pki.Set
	Files pki.Files
	// ClientCombined is the client chain followed by its key in one PEM
	// file, the layout HAProxy's "crt" wants.
	ClientCombined string
}

// WriteMaterial makes a fresh Set of key type k with Intermediates
// intermediates and writes it under dir/<key type>.
func WriteMaterial(dir string, k pki.KeyType) (*Material, error) {
	set, err := pki.NewSet(k, Intermediates)
	if err != nil {
		return nil, fmt.Errorf("making %s certificates: %w", k, err)
	}
	sub := filepath.Join(dir, k.String())
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return nil, fmt.Errorf("making %s: %w", sub, err)
	}
	files, err := set.WriteFiles(sub)
	if err != nil {
		return nil, fmt.Errorf("writing %s certificates: %w", k, err)
	}
	combined := filepath.Join(sub, "client-combined.pem")
	data := append(set.Client.ChainPEM(), set.Client.Leaf.KeyPEM()...)
	if err := os.WriteFile(combined, data, 0o600); err != nil {
		return nil, fmt.Errorf("writing %s: %w", combined, err)
	}
	return &Material{Key: k, Set: set, Files: files, ClientCombined: combined}, nil
}
