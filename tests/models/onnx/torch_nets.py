"""Small torch CNNs of three families, with batch norm, for the exporter-to-importer tests:
MobileNet-v2-style inverted residuals (depthwise convolutions, ReLU6, linear bottlenecks),
ResNet-style basic blocks (projection shortcuts, max pooling, global average pooling) and a
VGG-style stack (3x3 convolutions, max pooling, ``x.view(x.size(0), -1)``, dropout, a batch
norm on the features)."""

import torch
from torch import nn


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, hidden, 1), conv_bn(hidden, hidden, 3, stride,
                                                                   groups=hidden),
                                  conv_bn(hidden, cout, 1, act=None))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2ish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), InvertedResidual(8, 8, 1, 2),
                                      InvertedResidual(8, 12, 2, 3), InvertedResidual(12, 12, 1, 3),
                                      conv_bn(12, 32, 1, act=nn.Hardswish))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = conv_bn(cin, cout, 3, stride, act=nn.ReLU)
        self.b = conv_bn(cout, cout, 3, act=None)
        self.short = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout \
            else nn.Identity()

    def forward(self, x):
        return torch.relu(self.b(self.a(x)) + self.short(x))


class ResNetish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 1, act=nn.ReLU), nn.MaxPool2d(3, 2, 1))
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x)).mean((2, 3))
        return self.fc(x)


class VGGish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, act=nn.ReLU), conv_bn(8, 8, act=nn.ReLU),
                                      nn.MaxPool2d(2), conv_bn(8, 16, act=nn.ReLU),
                                      nn.MaxPool2d(2, ceil_mode=True), nn.LeakyReLU(0.1))
        self.classifier = nn.Sequential(nn.Linear(16 * 4 * 4, 32), nn.BatchNorm1d(32),
                                        nn.Sigmoid(), nn.Dropout(0.5), nn.Linear(32, classes),
                                        nn.Softmax(dim=1))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


NETS = {"mobilenet_v2": MobileNetV2ish, "resnet": ResNetish, "vgg": VGGish}


def randomised(net, seed):
    """Batch norm statistics and affines away from their initial values, eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()
