package tlsbridge

import (
	"crypto/tls"
	"testing"

	"github.com/tlsrelay/tlsrelay/internal/pki"
)

func TestBasicMTLSAndResumption(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(versionName(v), func(t *testing.T) {
			set := mustSet(t, pki.ECDSAP256, 1)
			f := pkiFiles(t, set)
			scfg := set.ServerConfig()
			scfg.MinVersion, scfg.MaxVersion = v, v
			srv := startServer(t, scfg)
			store := NewSessionStore(SessionStoreOptions{})
			p := mustPolicy(t, PolicyConfig{
				Certificate: f.ClientCert, CertificateKey: f.ClientKey,
				Verify: true, VerifyDepth: 1, TrustedCertificate: f.CA, SessionReuse: true,
			}, store)
			target := Target{Addr: srv.addr, Host: "localhost"}
			for i := 0; i < 4; i++ {
				cs, err := dialOnce(t, p, target, Vars{}, nil)
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				sc := srv.next(t)
				if sc.err != nil {
					t.Fatalf("server %d: %v", i, sc.err)
				}
				if want := i > 0; cs.DidResume != want {
					t.Fatalf("dial %d: resumed=%v, want %v", i, cs.DidResume, want)
				}
				if cs.Version != v {
					t.Fatalf("version %x", cs.Version)
				}
			}
			st := store.Stats(srv.addr)
			if st.Full != 1 || st.Resumed != 3 || st.Refused != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}
