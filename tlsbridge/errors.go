package tlsbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// Reason classifies why an upstream TLS handshake failed, so logs and
// metrics can count failures by cause. The zero value means no failure.
type Reason int

// Failure reasons.
const (
	ReasonNone              Reason = iota // no failure
	ReasonUnknownCA                       // no chain to a self-signed root of proxy_ssl_trusted_certificate
	ReasonNameMismatch                    // certificate does not match the verify name
	ReasonDepth                           // more intermediates than proxy_ssl_verify_depth
	ReasonExpired                         // a certificate in the chain is expired or not yet valid
	ReasonRevoked                         // a certificate in the chain is on a CRL
	ReasonCRL                             // a CRL is missing, expired, not yet valid or badly signed
	ReasonBadCertificate                  // any other certificate problem (usage, constraints, no certificate)
	ReasonProtocol                        // no protocol version in common
	ReasonCipher                          // no cipher suite or group in common (alert handshake_failure; a TLS 1.2 server may also send it for a missing client certificate)
	ReasonClientCertRefused               // the upstream rejected or required our client certificate
	ReasonTimeout                         // the handshake did not finish in time
	ReasonClosed                          // the upstream closed or reset the connection during the handshake
	ReasonHandshake                       // any other handshake failure (alerts, malformed messages)
	// ReasonClosedAfterHandshake: a TLS 1.3 upstream ended the connection
	// right after the handshake, before sending anything, with the
	// client's bytes unanswered: most likely it refused the client
	// certificate without an alert (GnuTLS's slapd does).
	ReasonClosedAfterHandshake
)

// ErrClosedAfterHandshake is the error of an upstream session ended as
// ReasonClosedAfterHandshake describes.
var ErrClosedAfterHandshake = errors.New("the upstream closed the connection right after the TLS 1.3 handshake, before sending any data: " +
	"it most likely refused the client certificate (without an alert)")

var reasonNames = [...]string{
	ReasonNone:                 "none",
	ReasonUnknownCA:            "unknown_ca",
	ReasonNameMismatch:         "name_mismatch",
	ReasonDepth:                "depth",
	ReasonExpired:              "expired",
	ReasonRevoked:              "revoked",
	ReasonCRL:                  "crl",
	ReasonBadCertificate:       "bad_certificate",
	ReasonProtocol:             "protocol",
	ReasonCipher:               "cipher",
	ReasonClientCertRefused:    "client_cert_refused",
	ReasonTimeout:              "timeout",
	ReasonClosed:               "closed",
	ReasonHandshake:            "handshake",
	ReasonClosedAfterHandshake: "closed_after_handshake",
}

// String returns a short snake_case name, suitable as a metrics label.
func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// VerifyError is a failed check of the upstream's certificate by our
// VerifyConnection: chain, depth, CRL or name. crypto/tls wraps it; use
// errors.As to get it back.
type VerifyError struct {
	Reason Reason
	// Detail is the message without the "upstream certificate" prefix
	// decisions; Error returns the full text.
	Detail string
	// Err is the underlying x509 error, if any.
	Err error
}

// Error returns the log text, e.g. `upstream certificate does not match
// "backend1.example.com"`.
func (e *VerifyError) Error() string {
	return e.Detail
}

// Unwrap returns the underlying x509 error, if any.
func (e *VerifyError) Unwrap() error { return e.Err }

// Classify returns the reason a handshake (or the first read after a TLS 1.3
// handshake, where a client-certificate rejection arrives) failed. It
// returns ReasonNone for nil.
func Classify(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	var ve *VerifyError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	if errors.Is(err, ErrClosedAfterHandshake) {
		return ReasonClosedAfterHandshake
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return ReasonTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout
	}
	var alert tls.AlertError
	if errors.As(err, &alert) {
		return classifyAlert(uint8(alert))
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		// crypto/tls returns a received alert as an unexported type inside
		// a *net.OpError; its text is fixed (crypto/tls alert.go).
		if a, ok := remoteAlerts[strings.TrimPrefix(oe.Err.Error(), "tls: ")]; ok {
			return classifyAlert(a)
		}
		return ReasonHandshake
	}
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) {
		return classifyX509(ce.Err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return ReasonClosed
	}
	// crypto/tls reports its own (local) refusals as plain errors with fixed
	// texts and no types; these few are matched by text.
	msg := err.Error()
	switch {
	case strings.Contains(msg, "protocol version"), strings.Contains(msg, "no supported versions"),
		strings.Contains(msg, "downgrade attempt"):
		return ReasonProtocol
	case strings.Contains(msg, "cipher suite"), strings.Contains(msg, "unsupported curve"),
		strings.Contains(msg, "CurvePreferences"), strings.Contains(msg, "key share"):
		return ReasonCipher
	}
	return ReasonHandshake
}

// remoteAlerts maps crypto/tls's alert texts to alert numbers.
var remoteAlerts = map[string]uint8{
	"handshake failure":              40,
	"bad certificate":                42,
	"unsupported certificate":        43,
	"revoked certificate":            44,
	"expired certificate":            45,
	"unknown certificate":            46,
	"unknown certificate authority":  48,
	"access denied":                  49,
	"protocol version not supported": 70,
	"insufficient security level":    71,
	"certificate required":           116,
	"no application protocol":        120,
}

// classifyAlert maps an alert received from the upstream.
func classifyAlert(a uint8) Reason {
	switch a {
	case 70: // protocol_version
		return ReasonProtocol
	case 40, 71: // handshake_failure, insufficient_security: usually no common suite or group
		return ReasonCipher
	case 42, 43, 44, 45, 46, 48, 49, 116: // bad/unsupported/revoked/expired/unknown certificate, unknown_ca, access_denied, certificate_required
		return ReasonClientCertRefused
	}
	return ReasonHandshake
}

func classifyX509(err error) Reason {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	switch {
	case errors.As(err, &ua):
		return ReasonUnknownCA
	case errors.As(err, &he):
		return ReasonNameMismatch
	case errors.As(err, &ci):
		if ci.Reason == x509.Expired {
			return ReasonExpired
		}
	}
	return ReasonBadCertificate
}
