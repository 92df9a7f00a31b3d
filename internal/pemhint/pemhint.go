// Package pemhint says when a file given to a PEM option holds DER
// instead, and how to convert it. engine/conf (at -t) and tlsbridge (at
// load and rotation) both report it; neither may import the other, so the
// check lives here, importing only the standard library.
package pemhint

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// Kind is what a PEM option's file should hold.
type Kind int

// The kinds of PEM files.
const (
	Certificate Kind = iota // proxy_ssl_certificate, proxy_ssl_trusted_certificate
	Key                     // proxy_ssl_certificate_key
	CRL                     // proxy_ssl_crl
)

// DER returns what to add to a "no PEM ... found" error when data,
// the whole file at path, looks like DER instead: a DER SEQUENCE starts
// with byte 0x30. It says whether the bytes parse as the wanted DER object
// and gives the openssl command that converts the file. "" when data does
// not start with 0x30.
func DER(data []byte, path string, kind Kind) string {
	if len(data) == 0 || data[0] != 0x30 {
		return ""
	}
	var what, tool string
	var err error
	switch kind {
	case Certificate:
		what, tool = "certificate", "x509"
		_, err = x509.ParseCertificate(data)
	case Key:
		what, tool = "private key", "pkey"
		err = parseDERKey(data)
	case CRL:
		what, tool = "CRL", "crl"
		_, err = x509.ParseRevocationList(data)
	}
	parses := ""
	if err == nil {
		parses = fmt.Sprintf(" and parses as a DER %s", what)
	}
	return fmt.Sprintf("; the file looks like DER (binary; first byte 0x30)%s, but this option takes PEM: convert it with `openssl %s -inform der -in %s -out %s`",
		parses, tool, shellQuote(path), shellQuote(path+".pem"))
}

// parseDERKey reports whether data is a DER private key in one of the
// forms a PEM key file may hold (PKCS#8, PKCS#1 RSA, SEC1 EC).
func parseDERKey(data []byte) error {
	if _, err := x509.ParsePKCS8PrivateKey(data); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(data); err == nil {
		return nil
	}
	_, err := x509.ParseECPrivateKey(data)
	return err
}

// shellQuote quotes s for a POSIX shell when it has characters a shell
// would treat specially.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:,=@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
