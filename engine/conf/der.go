package conf

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// pemKind is what a PEM option's file should hold, for derHint. (The same
// check as tlsbridge's, which reports it when a file changes at run time;
// this package imports nothing of tlsrelay's.)
type pemKind int

const (
	pemCertificate pemKind = iota // proxy_ssl_certificate, proxy_ssl_trusted_certificate
	pemKey                        // proxy_ssl_certificate_key
	pemCRL                        // proxy_ssl_crl
)

// derHint returns what to add to a "no PEM data found" error when data,
// the whole file at path, looks like DER instead: a DER SEQUENCE starts
// with byte 0x30. It says whether the bytes parse as the wanted DER object
// and gives the openssl command that converts the file. "" when data does
// not start with 0x30.
func derHint(data []byte, path string, kind pemKind) string {
	if len(data) == 0 || data[0] != 0x30 {
		return ""
	}
	var what, tool string
	var err error
	switch kind {
	case pemCertificate:
		what, tool = "certificate", "x509"
		_, err = x509.ParseCertificate(data)
	case pemKey:
		what, tool = "private key", "pkey"
		err = parseDERKey(data)
	case pemCRL:
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
