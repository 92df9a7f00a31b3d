package tlsbridge

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/pbkdf2"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/tlsrelay/tlsrelay/internal/pemhint"
	"github.com/tlsrelay/tlsrelay/internal/safefile"
)

// readFunc reads a whole file; the loaders take one so that Reload can
// record what it read (see fileReader).
type readFunc func(path string) ([]byte, error)

// loadClientCertificate reads proxy_ssl_certificate (leaf first, then any
// intermediates) and proxy_ssl_certificate_key, decrypting the key with the
// lines of passwordFile when it is encrypted, and checks that they match.
func loadClientCertificate(certFile, keyFile, passwordFile string) (*tls.Certificate, error) {
	return loadClientCertificateWith(plainReader, certFile, keyFile, passwordFile)
}

// plainReader gives each file to the loaders through readFile.
func plainReader(string) readFunc { return readFile }

// readFile reads a certificate, key, trust bundle, CRL or password file:
// a regular file of at most safefile.MaxPEM bytes (so /dev/urandom or a
// FIFO fails at once instead of hanging the load).
func readFile(path string) ([]byte, error) { return safefile.Read(path, safefile.MaxPEM) }

// loadClientCertificateWith is loadClientCertificate reading each file
// through reader(directive).
func loadClientCertificateWith(reader func(directive string) readFunc, certFile, keyFile, passwordFile string) (*tls.Certificate, error) {
	certs, err := readCertificatesWith(reader("proxy_ssl_certificate"), certFile)
	if err != nil {
		return nil, configError("proxy_ssl_certificate", fmt.Errorf("loading certificate %q: %w", certFile, err))
	}
	key, err := loadPrivateKeyWith(reader("proxy_ssl_certificate_key"), reader("proxy_ssl_password_file"), keyFile, passwordFile)
	if err != nil {
		return nil, err
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, configError("proxy_ssl_certificate_key", fmt.Errorf("loading certificate key %q: the key does not match certificate %q (%s)", keyFile, certFile, certs[0].Subject))
	}
	tc := &tls.Certificate{PrivateKey: fastSigner(key), Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// readPasswordsWith reads proxy_ssl_password_file with read: one password
// per line, empty lines skipped, as NGINX's ngx_ssl_read_password_file.
func readPasswordsWith(read readFunc, path string) ([]string, error) {
	data, err := read(path)
	if err != nil {
		return nil, configError("proxy_ssl_password_file", fmt.Errorf("loading proxy_ssl_password_file %q: %w", path, err))
	}
	out := strings.FieldsFunc(string(data), func(r rune) bool { return r == '\n' || r == '\r' })
	if len(out) == 0 {
		return nil, configError("proxy_ssl_password_file", fmt.Errorf("loading proxy_ssl_password_file %q: the file holds no password", path))
	}
	return out, nil
}

// loadPrivateKeyWith reads the first private key of a PEM file with
// readKey (and the password file with readPassword): PKCS#1 RSA, SEC1 EC,
// PKCS#8 (RSA, ECDSA, Ed25519), PKCS#8 encrypted with PBES2, or a legacy
// "Proc-Type: 4,ENCRYPTED" block.
func loadPrivateKeyWith(readKey, readPassword readFunc, keyFile, passwordFile string) (crypto.Signer, error) {
	wrap := func(err error) error {
		return configError("proxy_ssl_certificate_key", fmt.Errorf("loading certificate key %q: %w", keyFile, err))
	}
	data, err := readKey(keyFile)
	if err != nil {
		return nil, wrap(err)
	}
	all := data
	var block *pem.Block
	for {
		block, data = pem.Decode(data)
		if block == nil {
			return nil, wrap(errors.New("no PEM private key found" + pemhint.DER(all, keyFile, pemhint.Key)))
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			break
		}
	}
	//lint:ignore SA1019 legacy "Proc-Type: 4,ENCRYPTED" keys are what proxy_ssl_password_file must read (openssl rsa/ec -aes256 writes them).
	encrypted := block.Type == "ENCRYPTED PRIVATE KEY" || x509.IsEncryptedPEMBlock(block) //nolint:staticcheck // legacy PEM encryption is what openssl writes
	if !encrypted {
		k, err := parsePrivateKey(block.Type, block.Bytes)
		if err != nil {
			return nil, wrap(err)
		}
		return k, nil
	}
	if passwordFile == "" {
		return nil, wrap(errors.New("the key is encrypted and proxy_ssl_password_file is not set"))
	}
	passwords, err := readPasswordsWith(readPassword, passwordFile)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, pw := range passwords {
		var der []byte
		typ := block.Type
		if block.Type == "ENCRYPTED PRIVATE KEY" {
			der, err = decryptPKCS8(block.Bytes, []byte(pw))
			typ = "PRIVATE KEY"
		} else {
			//lint:ignore SA1019 legacy "Proc-Type: 4,ENCRYPTED" keys are what proxy_ssl_password_file must read (openssl rsa/ec -aes256 writes them).
			der, err = x509.DecryptPEMBlock(block, []byte(pw)) //nolint:staticcheck // see above
		}
		if err != nil {
			var unsupported *unsupportedEncryptionError
			if errors.As(err, &unsupported) {
				return nil, wrap(err)
			}
			lastErr = err
			continue
		}
		k, err := parsePrivateKey(typ, der)
		if err != nil {
			lastErr = err
			continue // a wrong password may decrypt to garbage with valid padding
		}
		return k, nil
	}
	return nil, configError("proxy_ssl_password_file", fmt.Errorf("no password in %q decrypts %q (%d tried, last error: %v)", passwordFile, keyFile, len(passwords), lastErr))
}

// parsePrivateKey parses a DER key of the given PEM type.
func parsePrivateKey(typ string, der []byte) (crypto.Signer, error) {
	var k any
	var err error
	switch typ {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(der)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(der)
	default:
		k, err = x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			// Some tools label PKCS#1 or SEC1 keys "PRIVATE KEY".
			if k2, err2 := x509.ParsePKCS1PrivateKey(der); err2 == nil {
				k, err = k2, nil
			} else if k3, err3 := x509.ParseECPrivateKey(der); err3 == nil {
				k, err = k3, nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", strings.ToLower(typ), err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported private key type %T (want RSA, ECDSA or Ed25519)", k)
}

// unsupportedEncryptionError is a PKCS#8 encryption scheme we cannot read
// whatever the password.
type unsupportedEncryptionError struct{ what string }

func (e *unsupportedEncryptionError) Error() string {
	return "unsupported key encryption: " + e.what + " (re-encrypt with `openssl pkcs8 -topk8 -v2 aes256`)"
}

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidScrypt     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
)

// PKCS#8 EncryptedPrivateKeyInfo and the PBES2 parameters (RFC 8018).
type encryptedPrivateKeyInfo struct {
	Algorithm algorithmIdentifier
	Data      []byte
}

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type pbes2Params struct {
	KDF algorithmIdentifier
	Enc algorithmIdentifier
}

type pbkdf2Params struct {
	Salt      []byte
	Iter      int
	KeyLength int                 `asn1:"optional"`
	PRF       algorithmIdentifier `asn1:"optional"`
}

// decryptPKCS8 decrypts an ENCRYPTED PRIVATE KEY block encrypted with PBES2
// (PBKDF2 with HMAC-SHA1/224/256/384/512, AES-128/192/256-CBC or
// DES-EDE3-CBC), as `openssl genpkey -aes256` and `openssl pkcs8 -topk8 -v2`
// write it, and returns the PKCS#8 DER.
func decryptPKCS8(der, password []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) > 0 {
		return nil, &unsupportedEncryptionError{"malformed EncryptedPrivateKeyInfo"}
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, &unsupportedEncryptionError{"scheme " + info.Algorithm.Algorithm.String() + " is not PBES2"}
	}
	var params pbes2Params
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil {
		return nil, &unsupportedEncryptionError{"malformed PBES2 parameters"}
	}
	if params.KDF.Algorithm.Equal(oidScrypt) {
		return nil, &unsupportedEncryptionError{"scrypt key derivation"}
	}
	if !params.KDF.Algorithm.Equal(oidPBKDF2) {
		return nil, &unsupportedEncryptionError{"key derivation " + params.KDF.Algorithm.String()}
	}
	var kdf pbkdf2Params
	if _, err := asn1.Unmarshal(params.KDF.Parameters.FullBytes, &kdf); err != nil {
		return nil, &unsupportedEncryptionError{"malformed PBKDF2 parameters"}
	}
	var prf func() hash.Hash
	switch alg := kdf.PRF.Algorithm; {
	case len(alg) == 0, alg.Equal(oidHMACSHA1):
		prf = sha1.New
	case alg.Equal(oidHMACSHA224):
		prf = sha256.New224
	case alg.Equal(oidHMACSHA256):
		prf = sha256.New
	case alg.Equal(oidHMACSHA384):
		prf = sha512.New384
	case alg.Equal(oidHMACSHA512):
		prf = sha512.New
	default:
		return nil, &unsupportedEncryptionError{"PBKDF2 PRF " + alg.String()}
	}
	var keyLen int
	var newBlock func([]byte) (cipher.Block, error)
	switch alg := params.Enc.Algorithm; {
	case alg.Equal(oidAES128CBC):
		keyLen, newBlock = 16, aes.NewCipher
	case alg.Equal(oidAES192CBC):
		keyLen, newBlock = 24, aes.NewCipher
	case alg.Equal(oidAES256CBC):
		keyLen, newBlock = 32, aes.NewCipher
	case alg.Equal(oidDESEDE3CBC):
		keyLen, newBlock = 24, des.NewTripleDESCipher
	default:
		return nil, &unsupportedEncryptionError{"cipher " + alg.String()}
	}
	if kdf.KeyLength != 0 && kdf.KeyLength != keyLen {
		return nil, &unsupportedEncryptionError{fmt.Sprintf("PBKDF2 key length %d for a %d-byte cipher key", kdf.KeyLength, keyLen)}
	}
	var iv []byte
	if _, err := asn1.Unmarshal(params.Enc.Parameters.FullBytes, &iv); err != nil {
		return nil, &unsupportedEncryptionError{"malformed IV"}
	}
	if kdf.Iter <= 0 || kdf.Iter > 1<<24 {
		return nil, &unsupportedEncryptionError{fmt.Sprintf("PBKDF2 iteration count %d", kdf.Iter)}
	}
	key, err := pbkdf2.Key(prf, string(password), kdf.Salt, kdf.Iter, keyLen)
	if err != nil {
		return nil, fmt.Errorf("deriving key: %w", err)
	}
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	if len(iv) != block.BlockSize() || len(info.Data) == 0 || len(info.Data)%block.BlockSize() != 0 {
		return nil, &unsupportedEncryptionError{"bad IV or ciphertext length"}
	}
	out := make([]byte, len(info.Data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, info.Data)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > block.BlockSize() || !bytes.Equal(out[len(out)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
		return nil, errors.New("decryption failed (wrong password?)")
	}
	return out[:len(out)-pad], nil
}
