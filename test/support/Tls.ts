/**
 * A self-signed certificate and its key for TLS tests, made once with openssl (EC P-256, valid 2020-2120) for
 * 127.0.0.1-127.0.0.5 and localhost. It is its own CA: a client trusts it with `ca: testTls.cert`.
 * Test material only: the key is public.
 */
export const testTls: { readonly cert: string; readonly key: string } = {
  cert: `
-----BEGIN CERTIFICATE-----
MIIBlDCCATqgAwIBAgIBATAKBggqhkjOPQQDAjAYMRYwFAYDVQQDDA1jb25zdWxh
ci10ZXN0MCAXDTIwMDEwMTAwMDAwMFoYDzIxMjAwMTAxMDAwMDAwWjAYMRYwFAYD
VQQDDA1jb25zdWxhci10ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEXiyE
Yd3TFQW9QK9SuKvcIw9DQu6o6cOEEfpCPJQk1lexyu+l97/jS6I692rILPPYBt6O
OIjFjEvMKrdyOlU80KNzMHEwDwYDVR0TAQH/BAUwAwEB/zALBgNVHQ8EBAMCAoQw
MgYDVR0RBCswKYcEfwAAAYcEfwAAAocEfwAAA4cEfwAABIcEfwAABYIJbG9jYWxo
b3N0MB0GA1UdDgQWBBSo6nxrCeKTFDfot9PtHbGgzBh62zAKBggqhkjOPQQDAgNI
ADBFAiEA3BkVTnHDugaNSciRIjLksrgo6Uy/J25oWG1LVhn09IsCIDJEf1JJUzLg
rorLSPfAB6G4UOOgOuHZvI1A3EycP8g6
-----END CERTIFICATE-----
`.trimStart(),
  key: `
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUzQ0xueBTw1kjCt5
R+v6LloWdE8gjyRkdJRvV3XWGXChRANCAAReLIRh3dMVBb1Ar1K4q9wjD0NC7qjp
w4QR+kI8lCTWV7HK76X3v+NLojr3asgs89gG3o44iMWMS8wqt3I6VTzQ
-----END PRIVATE KEY-----
`.trimStart()
}
