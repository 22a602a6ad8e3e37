// SPDX-License-Identifier: MIT
/*
 * The pieces the aws provider uses to reach an EKS cluster's Kubernetes
 * API: base64url for tokens, base64 for certificates, the cluster's name
 * in its ARN, and EKS DescribeCluster's answer read into an address and
 * a CA. Vectors: RFC 4648 section 10 and its URL-safe alphabet.
 */
#include "providers/aws/aws.h"

#include "check.h"

#include <errno.h>
#include <stdlib.h>

static void url(const char *in, size_t len, const char *want)
{
	BUF_AUTO out = BUF_INIT;

	aws_base64url(&out, in, len);
	CHECK_STR(buf_str(&out), want);
}

static void test_base64url(void)
{
	url("", 0, "");
	url("f", 1, "Zg");
	url("fo", 2, "Zm8");
	url("foo", 3, "Zm9v");
	url("foob", 4, "Zm9vYg");
	url("fooba", 5, "Zm9vYmE");
	url("foobar", 6, "Zm9vYmFy");
	/* '+' and '/' of the plain alphabet become '-' and '_'. */
	url("\xfb\xff\xbf", 3, "-_-_");
}

static void text(const char *b64, const char *want)
{
	char *got = aws_base64_text(b64);

	if (want)
		CHECK_STR(got, want);
	else
		CHECK(got == NULL);
	free(got);
}

static void test_base64_text(void)
{
	text("Zm9vYmFy", "foobar");
	text("Zm9vYg==", "foob");
	text("Zm9vYmE=", "fooba");
	text("LS0tLS1CRUdJTg==", "-----BEGIN");
	text("not base64!", NULL);
	/* Bytes that are not text (a NUL inside) are not a certificate. */
	text("AGE=", NULL);
}

static void test_cluster_name(void)
{
	CHECK_STR(aws_eks_cluster_name(
			  "arn:aws:eks:us-east-1:123456789012:cluster/ml-eks"),
		  "ml-eks");
	CHECK(aws_eks_cluster_name("arn:aws:eks:us-east-1:1:cluster/") == NULL);
	CHECK(aws_eks_cluster_name("ml-eks") == NULL);
	CHECK(aws_eks_cluster_name(NULL) == NULL);
}

static void test_kube_api(void)
{
	struct aws_kube_api api = { 0 };
	json_t *good = json_pack(
		"{s:{s:s, s:s, s:{s:s}}}", "cluster", "endpoint",
		"https://ABC.gr7.us-east-1.eks.amazonaws.com", "status",
		"ACTIVE", "certificateAuthority", "data", "LS0tLS1CRUdJTg==");
	json_t *creating =
		json_pack("{s:{s:s}}", "cluster", "status", "CREATING");
	json_t *plain = json_pack("{s:{s:s, s:{s:s}}}", "cluster", "endpoint",
				  "http://10.0.0.1", "certificateAuthority",
				  "data", "LS0tLS1CRUdJTg==");

	CHECK_INT(aws_kube_api_set(&api, "ml-eks", good), 0);
	CHECK_STR(api.cluster, "ml-eks");
	CHECK_STR(api.endpoint, "https://ABC.gr7.us-east-1.eks.amazonaws.com");
	CHECK_STR(api.ca_pem, "-----BEGIN");
	/* A failed read leaves what was known. */
	CHECK_INT(aws_kube_api_set(&api, "ml-eks", creating), -EPROTO);
	CHECK_INT(aws_kube_api_set(&api, "ml-eks", plain), -EPROTO);
	CHECK_STR(api.ca_pem, "-----BEGIN");
	aws_kube_api_clear(&api);
	CHECK(api.ca_pem == NULL && api.endpoint[0] == '\0');
	json_decref(good);
	json_decref(creating);
	json_decref(plain);
}

int main(void)
{
	test_base64url();
	test_base64_text();
	test_cluster_name();
	test_kube_api();
	return check_report("awskube");
}
