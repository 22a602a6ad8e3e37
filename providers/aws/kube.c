// SPDX-License-Identifier: MIT
/*
 * What the aws provider needs to reach an EKS cluster's Kubernetes API:
 * the address and certificate authority EKS DescribeCluster gives, and
 * the base64 forms of EKS tokens and certificates. The calls themselves
 * go through the client (client.c) like every other, with its retries
 * and pacing.
 */
#include "aws.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void aws_base64url(struct buf *out, const void *data, size_t len)
{
	size_t room = 4 * ((len + 2) / 3) + 1;
	unsigned char *text = xcalloc(room, 1);
	int n = EVP_EncodeBlock(text, data, (int)len);

	while (n > 0 && text[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++) {
		if (text[i] == '+')
			text[i] = '-';
		else if (text[i] == '/')
			text[i] = '_';
	}
	buf_add(out, text, (size_t)n);
	free(text);
}

char *aws_base64_text(const char *b64)
{
	size_t len = strlen(b64), pad = 0;
	unsigned char *out = xcalloc(len / 4 * 3 + 4, 1);
	int n = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)len);

	/* EVP_DecodeBlock counts the padding as bytes decoded. */
	while (pad < 2 && len > pad && b64[len - 1 - pad] == '=')
		pad++;
	if (n < 0 || (size_t)n < pad ||
	    memchr(out, '\0', (size_t)n - pad) != NULL) {
		free(out);
		return NULL;
	}
	out[(size_t)n - pad] = '\0';
	return (char *)out;
}

const char *aws_eks_cluster_name(const char *arn)
{
	const char *slash = arn ? strstr(arn, ":cluster/") : NULL;

	return slash && slash[9] ? slash + 9 : NULL;
}

int aws_kube_api_set(struct aws_kube_api *api, const char *cluster,
		     json_t *described)
{
	json_t *c = json_object_get(described, "cluster");
	const char *endpoint =
		json_string_value(json_object_get(c, "endpoint"));
	const char *ca = json_string_value(json_object_get(
		json_object_get(c, "certificateAuthority"), "data"));
	char *pem;

	if (!endpoint || strncmp(endpoint, "https://", 8) || !ca)
		return -EPROTO;
	pem = aws_base64_text(ca);
	if (!pem)
		return -EPROTO;
	aws_kube_api_clear(api);
	snprintf(api->cluster, sizeof(api->cluster), "%s", cluster);
	snprintf(api->endpoint, sizeof(api->endpoint), "%s", endpoint);
	api->ca_pem = pem;
	return 0;
}

void aws_kube_api_clear(struct aws_kube_api *api)
{
	free(api->ca_pem);
	memset(api, 0, sizeof(*api));
}
