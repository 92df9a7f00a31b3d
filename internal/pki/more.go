package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"
)

// CRL returns a PEM "X509 CRL" issued by c that revokes the given
// certificates. Zero times default to an hour ago and a day from now.
func (c *Cert) CRL(revoked []*Cert, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if thisUpdate.IsZero() {
		thisUpdate = time.Now().Add(-time.Hour)
	}
	if nextUpdate.IsZero() {
		nextUpdate = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(time.Now().UnixNano()),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}
	for _, r := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: r.Cert.SerialNumber, RevocationTime: thisUpdate,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("signing CRL of %q: %w", c.Cert.Subject.CommonName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// LegacyEncryptedKeyPEM returns the key in its traditional form (PKCS#1 for
// RSA, SEC1 for ECDSA) encrypted with AES-256-CBC under a
// "Proc-Type: 4,ENCRYPTED" header, as `openssl rsa -aes256` writes it.
// Ed25519 keys have no traditional form.
func (c *Cert) LegacyEncryptedKeyPEM(password string) ([]byte, error) {
	var typ string
	var der []byte
	var err error
	switch k := c.Key.(type) {
	case *rsa.PrivateKey:
		typ, der = "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)
	case *ecdsa.PrivateKey:
		typ = "EC PRIVATE KEY"
		der, err = x509.MarshalECPrivateKey(k)
	default:
		return nil, fmt.Errorf("no traditional PEM form for %T keys", c.Key)
	}
	if err != nil {
		return nil, err
	}
	//lint:ignore SA1019 legacy PEM encryption is what the tests need to read
	b, err := x509.EncryptPEMBlock(rand.Reader, typ, der, []byte(password), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(b), nil
}

// EncryptedKeyPEM returns the key as a PKCS#8 "ENCRYPTED PRIVATE KEY"
// (PBES2: PBKDF2 with HMAC-SHA256, AES-256-CBC), the format `openssl genpkey
// -aes256` writes.
func (c *Cert) EncryptedKeyPEM(password string) ([]byte, error) {
	plain, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	const iter = 2048
	key, err := pbkdf2.Key(sha256.New, password, salt, iter, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	for i := 0; i < pad; i++ {
		plain = append(plain, byte(pad))
	}
	enc := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(enc, plain)

	type algID struct {
		Algorithm  asn1.ObjectIdentifier
		Parameters asn1.RawValue `asn1:"optional"`
	}
	raw := func(v any) asn1.RawValue {
		b, err := asn1.Marshal(v)
		if err != nil {
			panic(err)
		}
		return asn1.RawValue{FullBytes: b}
	}
	kdf := struct {
		Salt []byte
		Iter int
		PRF  algID
	}{salt, iter, algID{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}, Parameters: asn1.NullRawValue}}
	params := struct{ KDF, Enc algID }{
		KDF: algID{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}, Parameters: raw(kdf)},
		Enc: algID{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}, Parameters: raw(iv)},
	}
	info := struct {
		Alg  algID
		Data []byte
	}{algID{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}, Parameters: raw(params)}, enc}
	der, err := asn1.Marshal(info)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), nil
}

// NewSelfSignedLeaf makes a self-signed end-entity certificate (CA:FALSE)
// for the given DNS names.
func NewSelfSignedLeaf(cn string, o Options) (*Cert, error) {
	return create(&x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"tlsrelay test"}},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPs,
	}, nil, o)
}
