//go:build !(openssl && cgo && linux)

package tlsbridge

import "crypto"

// fastSigner returns the key that signs for the client certificate: key
// itself in a build without the openssl tag (osslkey.go).
func fastSigner(key crypto.Signer) crypto.Signer { return key }

// KeyBackend says what computes the client certificate's signatures: Go,
// in a build without the openssl tag (make build-openssl signs RSA keys
// with OpenSSL's libcrypto).
func KeyBackend() string { return "Go" }
