// SPDX-License-Identifier: MIT
/*
 * kube_config_load(), kube_in_cluster() and kube_credential_get() on files
 * written here as kubectl and users write them: contexts, files relative
 * to the kubeconfig, inline base64 data, refusals with the key named, and
 * exec credential plugins (a shell script standing in for
 * gke-gcloud-auth-plugin or `aws eks get-token`) run, cached until they
 * expire, and reported when they fail.
 */
#include "providers/kubernetes/kubeconfig.h"
#include "tests/unit/check.h"
#include "util/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/infrafs-kubeconfig.XXXXXX";

static void write_file(const char *name, const char *text, mode_t mode)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static char *path_of(const char *name)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

static char *slurp(const char *name)
{
	static char text[4096];
	FILE *f = fopen(path_of(name), "r");
	size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;

	if (f)
		fclose(f);
	text[n] = '\0';
	return text;
}

/* "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" */
#define CERT_B64                                                           \
	"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElG" \
	"SUNBVEUtLS0tLQo="
#define CERT_PEM \
	"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

static const char kubeconfig[] =
	"apiVersion: v1\n"
	"kind: Config\n"
	"current-context: dev\n"
	"clusters:\n"
	"- name: lab\n"
	"  cluster:\n"
	"    server: https://10.0.0.1:6443\n"
	"    certificate-authority: certs/ca.crt\n"
	"- name: prod\n"
	"  cluster:\n"
	"    server: \"https://api.prod.example:443\"\n"
	"    certificate-authority-data: " CERT_B64 "\n"
	"- name: open\n"
	"  cluster:\n"
	"    server: https://open.example\n"
	"    insecure-skip-tls-verify: true\n"
	"- name: plain\n"
	"  cluster: {server: 'http://plain.example'}\n"
	"contexts:\n"
	"- name: dev\n"
	"  context: {cluster: lab, user: alice, namespace: ml-dev}\n"
	"- name: prod\n"
	"  context:\n"
	"    cluster: prod\n"
	"    user: robot\n"
	"- name: gke\n"
	"  context: {cluster: prod, user: plugin}\n"
	"- name: broken-plugin\n"
	"  context: {cluster: prod, user: failing}\n"
	"- name: stale-plugin\n"
	"  context: {cluster: prod, user: stale}\n"
	"- name: open\n"
	"  context: {cluster: open, user: alice}\n"
	"- name: plain\n"
	"  context: {cluster: plain, user: alice}\n"
	"- name: nowhere\n"
	"  context: {cluster: missing, user: alice}\n"
	"- name: legacy\n"
	"  context: {cluster: prod, user: legacy}\n"
	"- name: half\n"
	"  context: {cluster: prod, user: half}\n"
	"users:\n"
	"- name: alice\n"
	"  user:\n"
	"    client-certificate-data: " CERT_B64 "\n"
	"    client-key: keys/alice.key\n"
	"- name: robot\n"
	"  user:\n"
	"    tokenFile: robot.token\n"
	"- name: plugin\n"
	"  user:\n"
	"    exec:\n"
	"      apiVersion: client.authentication.k8s.io/v1\n"
	"      command: ./plugin.sh\n"
	"      args: [--cluster, prod]\n"
	"      env:\n"
	"      - name: PLUGIN_GREETING\n"
	"        value: hello\n"
	"      interactiveMode: Never\n"
	"- name: failing\n"
	"  user:\n"
	"    exec: {apiVersion: client.authentication.k8s.io/v1beta1,"
	" command: ./failing.sh}\n"
	"- name: stale\n"
	"  user:\n"
	"    exec: {apiVersion: client.authentication.k8s.io/v1,"
	" command: ./stale.sh}\n"
	"- name: legacy\n"
	"  user:\n"
	"    auth-provider: {name: gcp}\n"
	"- name: half\n"
	"  user: {client-key: keys/alice.key}\n";

static int load(const char *context, struct kube_target *t, char *err)
{
	return kube_config_load(path_of("config"), context, t, err, 512);
}

static void test_contexts(void)
{
	struct kube_target t;
	char err[512] = "";

	CHECK_INT(load(NULL, &t, err), 0);
	CHECK_STR(t.context, "dev");
	CHECK_STR(t.server, "https://10.0.0.1:6443");
	CHECK_STR(t.ca_pem, "CA FROM A FILE\n");
	CHECK_STR(t.cert_pem, CERT_PEM);
	CHECK_STR(t.key_pem, "ALICE KEY\n");
	CHECK_STR(t.namespace, "ml-dev");
	CHECK(!t.has_exec && !t.token && !t.token_file);
	kube_target_free(&t);

	CHECK_INT(load("prod", &t, err), 0);
	CHECK_STR(t.server, "https://api.prod.example:443");
	CHECK_STR(t.ca_pem, CERT_PEM);
	CHECK(t.namespace == NULL);
	CHECK_STR(t.token_file, path_of("robot.token"));
	kube_target_free(&t);
}

static void check_refused(const char *context, const char *want)
{
	struct kube_target t;
	char err[512] = "";

	CHECK_INT(load(context, &t, err), -EINVAL);
	CHECK_HAS(err, want);
	CHECK(t.server == NULL);
}

static void test_refusals(void)
{
	struct kube_target t;
	char err[512] = "";

	check_refused("staging", "no context named staging");
	check_refused("open", "cluster.insecure-skip-tls-verify is refused");
	check_refused("plain", "cluster.server must be an https:// address");
	check_refused("nowhere", "context nowhere names no known cluster");
	check_refused("legacy", "user.auth-provider is not supported");
	check_refused("half", "client key without its certificate");
	write_file("bad", "clusters:\n- name: x\n  cluster: {server: [\n",
		   0600);
	CHECK_INT(kube_config_load(path_of("bad"), NULL, &t, err, sizeof(err)),
		  -EINVAL);
	CHECK_HAS(err, "line ");
	CHECK_INT(
		kube_config_load(path_of("absent"), NULL, &t, err, sizeof(err)),
		-ENOENT);
	CHECK_HAS(err, "kubeconfig ");
	CHECK_HAS(err, "No such file or directory");
	write_file("nocurrent", "clusters: []\n", 0600);
	CHECK_INT(kube_config_load(path_of("nocurrent"), NULL, &t, err,
				   sizeof(err)),
		  -EINVAL);
	CHECK_HAS(err, "no current-context; set kubernetes.context");
}

static void test_token_file_rotation(void)
{
	struct kube_target t;
	struct kube_credential cache = { 0 }, c;
	char err[512] = "";

	CHECK_INT(load("prod", &t, err), 0);
	write_file("robot.token", "first-token\n", 0600);
	CHECK_INT(kube_credential_get(&t, &cache, time_now(), &c, err,
				      sizeof(err)),
		  0);
	CHECK_STR(c.token, "first-token");
	kube_credential_free(&c);
	write_file("robot.token", "rotated-token\n", 0600);
	CHECK_INT(kube_credential_get(&t, &cache, time_now(), &c, err,
				      sizeof(err)),
		  0);
	CHECK_STR(c.token, "rotated-token");
	kube_credential_free(&c);
	kube_target_free(&t);
}

static void test_exec_plugin(void)
{
	struct kube_target t;
	struct kube_credential cache = { 0 }, c;
	char err[512] = "";
	double now = time_now();

	CHECK_INT(load("gke", &t, err), 0);
	CHECK(t.has_exec);
	CHECK_STR(t.exec.command, "./plugin.sh");
	/* The plugin runs from the daemon's folder: the test's. */
	CHECK_INT(chdir(dir), 0);
	CHECK_INT(kube_credential_get(&t, &cache, now, &c, err, sizeof(err)),
		  0);
	CHECK_STR(c.token, "token-1");
	CHECK(c.expires > now + 3000);
	kube_credential_free(&c);
	CHECK_HAS(slurp("plugin.seen"), "args=--cluster prod");
	CHECK_HAS(slurp("plugin.seen"), "greeting=hello");
	CHECK_HAS(slurp("plugin.seen"),
		  "info={\"apiVersion\":\"client.authentication.k8s.io/v1\","
		  "\"kind\":\"ExecCredential\",\"spec\":{\"interactive\":"
		  "false}}");
	CHECK_HAS(slurp("plugin.seen"), "stdin=empty");
	/* Cached until a minute before it expires. */
	CHECK_INT(
		kube_credential_get(&t, &cache, now + 60, &c, err, sizeof(err)),
		0);
	CHECK_STR(c.token, "token-1");
	kube_credential_free(&c);
	CHECK_INT(kube_credential_get(&t, &cache, cache.expires - 30, &c, err,
				      sizeof(err)),
		  0);
	CHECK_STR(c.token, "token-2");
	kube_credential_free(&c);
	kube_credential_free(&cache);
	kube_target_free(&t);

	CHECK_INT(load("broken-plugin", &t, err), 0);
	CHECK_INT(kube_credential_get(&t, &cache, now, &c, err, sizeof(err)),
		  -EIO);
	CHECK_HAS(err, "exec plugin ./failing.sh exited with 3: "
		       "credentials expired, run gcloud auth login");
	kube_target_free(&t);

	CHECK_INT(load("stale-plugin", &t, err), 0);
	CHECK_INT(kube_credential_get(&t, &cache, now, &c, err, sizeof(err)),
		  -EKEYEXPIRED);
	CHECK_HAS(err,
		  "the credential it gave expired at 2020-01-01T00:00:00Z");
	kube_target_free(&t);
}

static void test_in_cluster(void)
{
	struct kube_target t;
	struct kube_credential cache = { 0 }, c;
	char err[512] = "";

	unsetenv("KUBERNETES_SERVICE_HOST");
	CHECK_INT(kube_in_cluster(path_of("sa"), &t, err, sizeof(err)),
		  -ENOENT);
	setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
	setenv("KUBERNETES_SERVICE_PORT", "443", 1);
	CHECK_INT(kube_in_cluster(path_of("sa"), &t, err, sizeof(err)), 0);
	CHECK_STR(t.server, "https://10.96.0.1:443");
	CHECK_STR(t.ca_pem, "SERVICE ACCOUNT CA\n");
	CHECK_STR(t.namespace, "ml-serving");
	CHECK_INT(kube_credential_get(&t, &cache, time_now(), &c, err,
				      sizeof(err)),
		  0);
	CHECK_STR(c.token, "sa-token-1");
	kube_credential_free(&c);
	/* The kubelet rotates the projected token in place. */
	write_file("sa/token", "sa-token-2", 0600);
	CHECK_INT(kube_credential_get(&t, &cache, time_now(), &c, err,
				      sizeof(err)),
		  0);
	CHECK_STR(c.token, "sa-token-2");
	kube_credential_free(&c);
	kube_target_free(&t);
	setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
	CHECK_INT(kube_in_cluster(path_of("sa"), &t, err, sizeof(err)), 0);
	CHECK_STR(t.server, "https://[fd00::1]:443");
	kube_target_free(&t);
}

int main(void)
{
	char sa[600];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(sa, sizeof(sa), "%s/certs", dir);
	mkdir(sa, 0700);
	snprintf(sa, sizeof(sa), "%s/keys", dir);
	mkdir(sa, 0700);
	snprintf(sa, sizeof(sa), "%s/sa", dir);
	mkdir(sa, 0700);
	write_file("config", kubeconfig, 0600);
	write_file("certs/ca.crt", "CA FROM A FILE\n", 0644);
	write_file("keys/alice.key", "ALICE KEY\n", 0600);
	write_file("sa/ca.crt", "SERVICE ACCOUNT CA\n", 0644);
	write_file("sa/token", "sa-token-1", 0600);
	write_file("sa/namespace", "ml-serving\n", 0644);
	write_file(
		"plugin.sh",
		"#!/bin/sh\n"
		"n=$(( $(cat plugin.count 2>/dev/null || echo 0) + 1 ))\n"
		"echo $n > plugin.count\n"
		"if read -r line; then s=read; else s=empty; fi\n"
		"{ echo \"args=$*\"; echo \"greeting=$PLUGIN_GREETING\";\n"
		"  echo \"info=$KUBERNETES_EXEC_INFO\"; echo \"stdin=$s\"; }"
		" > plugin.seen\n"
		"exp=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)\n"
		"printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\","
		"\"kind\":\"ExecCredential\",\"status\":{\"token\":"
		"\"token-%s\",\"expirationTimestamp\":\"%s\"}}' $n $exp\n",
		0755);
	write_file("failing.sh",
		   "#!/bin/sh\necho 'credentials expired, run gcloud auth "
		   "login' >&2\necho 'second line' >&2\nexit 3\n",
		   0755);
	write_file("stale.sh",
		   "#!/bin/sh\necho '{\"kind\":\"ExecCredential\",\"status\":"
		   "{\"token\":\"old\",\"expirationTimestamp\":"
		   "\"2020-01-01T00:00:00Z\"}}'\n",
		   0755);
	test_contexts();
	test_refusals();
	test_token_file_rotation();
	test_exec_plugin();
	test_in_cluster();
	snprintf(sa, sizeof(sa), "rm -rf '%s'", dir);
	if (system(sa) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%d checks, %d failed\n", check_count, check_failures);
	return check_failures != 0;
}
