//go:build openssl && cgo && linux

package tlsbridge

// RSA client-certificate signatures through OpenSSL's libcrypto, for builds
// with the openssl tag (make build-openssl). Go's RSA-2048 private-key
// operation costs about 0.9 ms on the bench machine, OpenSSL 3.0's about
// 0.26 ms: in a full handshake with an RSA client certificate that
// signature is most of the proxy's CPU. crypto/tls still runs the whole
// handshake; only the CertificateVerify signature of the configured key is
// computed by libcrypto, which is opened at run time (dlopen of
// libcrypto.so.3, no headers or link-time dependency), so the binary
// still starts, signing with Go, where OpenSSL 3 is not installed.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>

static void *(*p_d2i_AutoPrivateKey)(void **, const unsigned char **, long);
static void *(*p_EVP_PKEY_CTX_new)(void *, void *);
static int (*p_EVP_PKEY_sign_init)(void *);
static int (*p_EVP_PKEY_CTX_set_rsa_padding)(void *, int);
static int (*p_EVP_PKEY_CTX_set_signature_md)(void *, const void *);
static int (*p_EVP_PKEY_CTX_set_rsa_pss_saltlen)(void *, int);
static int (*p_EVP_PKEY_CTX_set_rsa_mgf1_md)(void *, const void *);
static int (*p_EVP_PKEY_sign)(void *, unsigned char *, size_t *, const unsigned char *, size_t);
static void (*p_EVP_PKEY_CTX_free)(void *);
static void (*p_EVP_PKEY_free)(void *);
static const void *(*p_EVP_sha256)(void);
static const void *(*p_EVP_sha384)(void);
static const void *(*p_EVP_sha512)(void);
static unsigned long (*p_ERR_get_error)(void);
static void (*p_ERR_error_string_n)(unsigned long, char *, size_t);
static const char *(*p_OpenSSL_version)(int);

// tr_ossl_open loads libcrypto.so.3 and the functions used here; it
// returns NULL or what failed.
static const char *tr_ossl_open(void) {
	void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		return dlerror();
	}
#define TR_LOAD(f) if ((*(void **)(&p_##f) = dlsym(h, #f)) == NULL) return "libcrypto.so.3 has no " #f;
	TR_LOAD(d2i_AutoPrivateKey)
	TR_LOAD(EVP_PKEY_CTX_new)
	TR_LOAD(EVP_PKEY_sign_init)
	TR_LOAD(EVP_PKEY_CTX_set_rsa_padding)
	TR_LOAD(EVP_PKEY_CTX_set_signature_md)
	TR_LOAD(EVP_PKEY_CTX_set_rsa_pss_saltlen)
	TR_LOAD(EVP_PKEY_CTX_set_rsa_mgf1_md)
	TR_LOAD(EVP_PKEY_sign)
	TR_LOAD(EVP_PKEY_CTX_free)
	TR_LOAD(EVP_PKEY_free)
	TR_LOAD(EVP_sha256)
	TR_LOAD(EVP_sha384)
	TR_LOAD(EVP_sha512)
	TR_LOAD(ERR_get_error)
	TR_LOAD(ERR_error_string_n)
	TR_LOAD(OpenSSL_version)
#undef TR_LOAD
	return NULL;
}

static const char *tr_ossl_version(void) { return p_OpenSSL_version(0); }

static void *tr_ossl_key(const unsigned char *der, long n) {
	return p_d2i_AutoPrivateKey(NULL, &der, n);
}

static void tr_ossl_free(void *k) { p_EVP_PKEY_free(k); }

// tr_ossl_sign signs the digest tbs (of hash bits 256, 384 or 512) with
// padding pad (1 PKCS #1 v1.5, 6 PSS with salt length salt, -1 for the
// digest's length). It returns 1, or 0 with the error queue set.
static int tr_ossl_sign(void *k, int pad, int hash, int salt,
		const unsigned char *tbs, size_t tbslen, unsigned char *sig, size_t *siglen) {
	const void *md = hash == 256 ? p_EVP_sha256() : hash == 384 ? p_EVP_sha384() : hash == 512 ? p_EVP_sha512() : NULL;
	void *ctx = p_EVP_PKEY_CTX_new(k, NULL);
	if (ctx == NULL) {
		return 0;
	}
	int ok = md != NULL && p_EVP_PKEY_sign_init(ctx) > 0 &&
		p_EVP_PKEY_CTX_set_rsa_padding(ctx, pad) > 0 &&
		p_EVP_PKEY_CTX_set_signature_md(ctx, md) > 0;
	if (ok && pad == 6) {
		ok = p_EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, salt) > 0 &&
			p_EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) > 0;
	}
	ok = ok && p_EVP_PKEY_sign(ctx, sig, siglen, tbs, tbslen) > 0;
	p_EVP_PKEY_CTX_free(ctx);
	return ok;
}

static void tr_ossl_error(char *buf, size_t n) {
	unsigned long first = p_ERR_get_error(); // the oldest says most
	while (p_ERR_get_error() != 0) { // drain the rest
	}
	p_ERR_error_string_n(first, buf, n);
}
*/
import "C"

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"unsafe"
)

// libcrypto is the outcome of opening libcrypto.so.3, once per process.
var libcrypto = sync.OnceValues(func() (string, error) {
	if msg := C.tr_ossl_open(); msg != nil {
		return "", fmt.Errorf("opening OpenSSL's libcrypto: %s", C.GoString(msg))
	}
	return C.GoString(C.tr_ossl_version()), nil
})

// KeyBackend says what computes the client certificate's RSA signatures:
// "OpenSSL x.y.z (libcrypto.so.3)", or Go and why not OpenSSL.
func KeyBackend() string {
	v, err := libcrypto()
	if err != nil {
		return "Go (" + err.Error() + ")"
	}
	return v + " (libcrypto.so.3) for RSA keys"
}

// osslRSAKey is an RSA private key held by libcrypto. Sign is safe for
// concurrent use (each call has its own EVP_PKEY_CTX); the EVP_PKEY is
// freed when the signer is collected.
type osslRSAKey struct {
	goKey *rsa.PrivateKey // the public half, and the signer for what OpenSSL is not asked
	pkey  unsafe.Pointer  // the EVP_PKEY
}

// fastSigner returns the key that signs for the client certificate: an
// OpenSSL-held copy of an RSA key when libcrypto is there, else key.
func fastSigner(key crypto.Signer) crypto.Signer {
	rk, ok := key.(*rsa.PrivateKey)
	if !ok {
		return key
	}
	if _, err := libcrypto(); err != nil {
		return key
	}
	der, err := x509.MarshalPKCS8PrivateKey(rk)
	if err != nil {
		return key
	}
	p := C.tr_ossl_key((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)))
	clear(der)
	if p == nil {
		return key
	}
	k := &osslRSAKey{goKey: rk, pkey: p}
	runtime.AddCleanup(k, func(p unsafe.Pointer) { C.tr_ossl_free(p) }, p)
	return k
}

// Public returns the public key. Any goroutine.
func (k *osslRSAKey) Public() crypto.PublicKey { return k.goKey.Public() }

// Sign signs digest as crypto/tls asks: RSA-PSS with the salt as long as
// the hash, or PKCS #1 v1.5, with SHA-256, -384 or -512. Anything else is
// signed by Go. Any goroutine.
func (k *osslRSAKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	pad, salt := C.int(1), C.int(0)
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		if pss.SaltLength != rsa.PSSSaltLengthEqualsHash {
			return k.goKey.Sign(rand, digest, opts)
		}
		pad, salt = 6, -1
	}
	var bits C.int
	switch opts.HashFunc() {
	case crypto.SHA256:
		bits = 256
	case crypto.SHA384:
		bits = 384
	case crypto.SHA512:
		bits = 512
	default:
		return k.goKey.Sign(rand, digest, opts)
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, errors.New("signing with OpenSSL: the digest's length does not match its hash")
	}
	sig := make([]byte, k.goKey.Size())
	n := C.size_t(len(sig))
	ok := C.tr_ossl_sign(k.pkey, pad, bits, salt, (*C.uchar)(unsafe.Pointer(&digest[0])), C.size_t(len(digest)),
		(*C.uchar)(unsafe.Pointer(&sig[0])), &n)
	runtime.KeepAlive(k) // the EVP_PKEY lives as long as k
	if ok != 1 {
		var buf [256]C.char
		C.tr_ossl_error(&buf[0], C.size_t(len(buf)))
		return nil, fmt.Errorf("signing with OpenSSL: %s", C.GoString(&buf[0]))
	}
	return sig[:n], nil
}
