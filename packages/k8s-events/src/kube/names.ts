// Kubernetes name syntax (apimachinery validation), checked at construction so bad options fail early.

const DNS_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const DNS_SUBDOMAIN = new RegExp(`^${DNS_LABEL}(\\.${DNS_LABEL})*$`);
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** A DNS-1123 subdomain (names of Nodes, Events; label prefixes). */
export function isDnsSubdomain(value: string, maxLength = 253): boolean {
  return value.length > 0 && value.length <= maxLength && DNS_SUBDOMAIN.test(value);
}

/** A DNS-1123 label (namespaces). */
export function isDnsLabel(value: string): boolean {
  return value.length > 0 && value.length <= 63 && new RegExp(`^${DNS_LABEL}$`).test(value);
}

/** A label key: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters. */
export function isLabelKey(value: string): boolean {
  const slash = value.indexOf('/');
  const prefix = slash === -1 ? undefined : value.slice(0, slash);
  const name = slash === -1 ? value : value.slice(slash + 1);
  if (prefix !== undefined && !isDnsSubdomain(prefix)) return false;
  return name.length > 0 && name.length <= 63 && LABEL_NAME.test(name);
}

/** A label value: empty, or at most 63 characters of the label-name alphabet. */
export function isLabelValue(value: string): boolean {
  return value === '' || (value.length <= 63 && LABEL_NAME.test(value));
}
